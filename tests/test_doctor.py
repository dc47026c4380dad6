"""`mammo-node doctor` against a running node: it finds a stopped destination, a missing
bundle and a certificate about to expire, and says all is well when it is."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.nodeops import StoreSCP, add_destination_by_cli
from tests.helpers.tools import free_port


@pytest.fixture
def results_scp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received").start()
    yield scp
    scp.stop()


def _doctor(node: Any, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    run = node.cli("doctor", "--json", *args, check=False)
    report = json.loads(run.stdout)
    assert report["healthy"] == (run.returncode == 0), run.stdout
    return run.returncode, {row["check"]: row for row in report["checks"]}


def test_doctor_finds_a_stopped_destination_and_a_missing_bundle(
    node_process: Any, tmp_path: Path, tiny_bundle: Path, results_scp: Any, db_url: str
) -> None:
    node = node_process(
        tmp_path / "data",
        db_url=db_url,
        MAMMO_SERVE_WORKER="false",
        MAMMO_MODEL_BUNDLE=str(tiny_bundle),
        MAMMO_RETENTION_DAYS="30",
    )
    node.env["MAMMO_PORT"] = str(node.port)  # the doctor checks the ports the node serves
    node.env["MAMMO_HTTP_PORT"] = str(node.http_port)
    node.start()
    add_destination_by_cli(node, "pacs", "RESULTS", results_scp.port)
    code, rows = _doctor(node)
    assert code == 0, [r for r in rows.values() if r["status"] == "fail"]
    assert rows["database"]["status"] == "ok" and rows["migrations"]["status"] == "ok"
    assert rows["model bundle"]["status"] == "warn"  # the tiny test bundle says it is a demo
    assert "sha256" in rows["model bundle"]["detail"]
    assert rows["destination pacs"]["status"] == "ok"
    assert rows["dicom port"]["status"] == "ok" and "this node" in rows["dicom port"]["detail"]
    assert rows["http port"]["status"] == "ok" and "this node" in rows["http port"]["detail"]

    # a destination whose PACS is stopped, and a bundle that is not there
    add_destination_by_cli(node, "stopped", "STOPPED", free_port())
    code, rows = _doctor(node, "--model-bundle", str(tmp_path / "no-such-bundle"))
    assert code == 1
    assert rows["destination stopped"]["status"] == "fail"
    assert "cannot connect" in rows["destination stopped"]["detail"]
    assert rows["destination pacs"]["status"] == "ok"
    assert rows["model bundle"]["status"] == "fail"
    assert "manifest.json" in rows["model bundle"]["detail"]
    table = node.cli("doctor", check=False)
    assert table.returncode == 1 and "destination stopped" in table.stdout
    assert node.stop() == 0


def test_doctor_reads_the_certificate_expiry(node_process: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "10",
            "-subj",
            "/CN=mammo-node",
        ],
        check=True,
        capture_output=True,
    )
    node = node_process(tmp_path / "data", MAMMO_TLS_CERT=str(cert), MAMMO_TLS_KEY=str(key))
    node.cli("db", "upgrade")
    code, rows = _doctor(node)
    assert rows["tls certificate"]["status"] == "warn"
    assert "expires on" in rows["tls certificate"]["detail"]
    assert rows["destinations"]["status"] == "warn"
    assert rows["retention"]["status"] == "warn"
    assert code == 0
