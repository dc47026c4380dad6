"""Backup while the node runs, restore into a new data directory (and a new PostgreSQL
database): the same exams, results and delivery states come back, and the files serve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.nodeops import (
    StoreSCP,
    add_destination_by_cli,
    exam_json,
    scoring_node,
    send_and_wait,
)
from tests.helpers.tools import free_port


@pytest.fixture
def results_scp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received").start()
    yield scp
    scp.stop()


def _essentials(detail: dict[str, Any]) -> dict[str, Any]:
    """What a restore must bring back exactly (attempt counters move on while a node runs)."""
    result = detail["result"]
    return {
        "state": detail["state"],
        "slots": detail["slots"],
        "exam_score": result["exam_score"],
        "breast_scores": result["breast_scores"],
        "outputs": result["outputs"],
        "deliveries": sorted(
            (d["destination"], d["sop_instance_uid"], d["state"]) for d in result["deliveries"]
        ),
    }


def test_backup_while_running_and_restore_into_a_new_data_dir(
    node_process: Any,
    tmp_path: Path,
    tiny_bundle: Path,
    synth_exams: list[Any],
    results_scp: Any,
    db_url: str,
    request: pytest.FixtureRequest,
) -> None:
    node = scoring_node(node_process, tmp_path / "data", tiny_bundle, db_url=db_url).start()
    add_destination_by_cli(node, "pacs", "RESULTS", results_scp.port)
    first, second, third = synth_exams
    send_and_wait(node, first.files, first.study_uid, delivered=True)
    add_destination_by_cli(node, "down", "DOWN", free_port())
    send_and_wait(node, second.files, second.study_uid, delivered=False)
    before = {uid: _essentials(exam_json(node, uid)) for uid in (first.study_uid, second.study_uid)}

    folder = tmp_path / "backup"
    made = json.loads(node.cli("backup", str(folder), "--json").stdout)
    # per exam: 4 images + 15 outputs (exam SR, 4 view SRs, 4 SC, 4 SEG, CAD SR, GSPS)
    assert made["files"] == 2 * 19 and made["copied"] == 38 and made["missing"] == []
    assert made["counts"]["exams"] == {"scored": 2}
    assert made["counts"]["outbox"]["delivered"] == 26 and made["counts"]["outbox"]["pending"] == 13
    # again into the same folder: nothing new to copy
    again = json.loads(node.cli("backup", str(folder), "--json").stdout)
    assert again["copied"] == 0 and again["files"] == 38

    # the node goes on after the backup: this exam is not in it
    send_and_wait(node, third.files, third.study_uid, delivered=False)
    assert node.stop() == 0

    target_url = request.getfixturevalue("pg_url") if db_url.startswith("postgresql") else None
    restored = node_process(tmp_path / "restored", db_url=target_url)
    report = json.loads(restored.cli("restore", str(folder), "--json").stdout)
    assert report["files"] == 38 and report["counts"] == again["counts"]
    listed = json.loads(restored.cli("exams", "list", "--json").stdout)
    assert sorted(e["study_uid"] for e in listed) == sorted(before)
    for uid, expected in before.items():
        assert _essentials(exam_json(restored, uid)) == expected

    # restoring over a data directory in use is refused
    refused = restored.cli("restore", str(folder), check=False)
    assert refused.returncode == 2 and "new data directory" in refused.stderr.replace("\n", " ")

    # the restored node serves the files its database names
    restored.env["MAMMO_LOOPBACK_WITHOUT_TOKEN"] = "true"
    restored.env["MAMMO_SERVE_WORKER"] = "false"
    restored.start()
    ds = next(iter(first.datasets.values()))
    url = (
        f"http://127.0.0.1:{restored.http_port}/dicomweb/studies/{first.study_uid}"
        f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    got = httpx.get(
        url, timeout=30, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert got.status_code == 200 and b"DICM" in got.content
    assert restored.stop() == 0
