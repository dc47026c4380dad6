"""The command line against a running node: the interfaces other work relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.mg import four_view_exam, write
from tests.helpers.tools import storescu, wait_for


def test_db_upgrade_serve_send_and_exams_json(
    node_process: Any, tmp_path: Path, db_url: str
) -> None:
    node = node_process(tmp_path / "data", db_url=db_url)
    upgraded = node.cli("db", "upgrade")
    assert "database at revision" in upgraded.stdout
    node.start()

    echo = node.cli("echo", "127.0.0.1", str(node.port), "--called-ae", "MAMMO_NODE", data=False)
    assert "status 0x0000" in echo.stdout

    exam = four_view_exam()
    files = write(exam, tmp_path / "exam")
    sent = node.cli("send", *map(str, files[:3]), "--to", f"127.0.0.1:{node.port}", data=False)
    assert "sent 3 of 3" in sent.stdout
    assert storescu(node.port, files[3:]).returncode == 0
    study = str(exam[0].StudyInstanceUID)

    def shown() -> dict[str, Any]:
        return json.loads(node.cli("exams", "show", study, "--json").stdout)

    # READY, then the node's worker scores it (demo model)
    detail = wait_for(
        lambda: (d := shown())["state"] in ("ready", "scoring", "scored") and d, timeout=30
    )
    assert set(detail["slots"]) == {"L-CC", "L-MLO", "R-CC", "R-MLO"}
    assert detail["slots"]["R-MLO"] == str(exam[3].SOPInstanceUID)
    assert detail["not_scored"] == []
    listed = json.loads(node.cli("exams", "list", "--json").stdout)
    assert [e["study_uid"] for e in listed] == [study]
    table = node.cli("exams", "show", study).stdout
    assert "R-MLO" in table and detail["study_uid"] in table

    missing = node.cli("exams", "show", "1.2.3.4", check=False)
    assert missing.returncode == 2 and "no exam" in missing.stderr
    assert node.stop() == 0
    log = node.log.read_text()
    assert "Test^Patient" not in log and "PAT-1" not in log and "19600101" not in log


def test_echo_to_a_closed_port_says_so(tmp_path: Path) -> None:
    from tests.helpers.tools import free_port

    result = subprocess.run(
        [str(Path(sys.executable).parent / "mammo-node"), "echo", "127.0.0.1", str(free_port())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "cannot connect" in result.stderr
