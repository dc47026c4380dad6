"""Retention against a running node: it frees the space of delivered exams, oldest first,
and never touches an exam that is undelivered or held; the records stay, the bytes answer 410."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mammo_node.db.models import Instance
from mammo_node.db.session import Database
from tests.helpers.nodeops import (
    StoreSCP,
    add_destination_by_cli,
    exam_json,
    scoring_node,
    send_and_wait,
)
from tests.helpers.tools import free_port, storescu, wait_for

# stored per scored exam: 4 images + 15 outputs (exam SR, 4 view SRs, 4 SC, 4 SEG, CAD SR, GSPS)
FILES_PER_EXAM = 19
OUTPUTS_PER_EXAM = 15


@pytest.fixture
def results_scp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received").start()
    yield scp
    scp.stop()


def _files_on_disk(node: Any, study_uid: str) -> list[Path]:
    folder = node.data_dir / "instances" / study_uid
    return sorted(p for p in folder.rglob("*.dcm")) if folder.is_dir() else []


def _received_paths(db: Database, study_uid: str) -> list[tuple[str, str, Any]]:
    from mammo_node.db.models import Exam

    with db.read() as session:
        return [
            (row.sop_instance_uid, row.origin, row.pruned_at)
            for row in session.scalars(
                select(Instance)
                .join(Exam, Instance.exam_fk == Exam.id)
                .where(Exam.study_uid == study_uid)
            )
        ]


def test_prune_frees_delivered_exams_and_spares_undelivered_and_held(
    node_process: Any,
    tmp_path: Path,
    tiny_bundle: Path,
    synth_exams: list[Any],
    results_scp: Any,
    db_url: str,
) -> None:
    node = scoring_node(node_process, tmp_path / "data", tiny_bundle, db_url=db_url).start()
    add_destination_by_cli(node, "pacs", "RESULTS", results_scp.port)
    first, second, third = synth_exams
    send_and_wait(node, first.files, first.study_uid, delivered=True)
    send_and_wait(node, second.files, second.study_uid, delivered=True)
    # a second destination that is down: the third exam stays undelivered there
    add_destination_by_cli(node, "down", "DOWN", free_port())
    send_and_wait(node, third.files, third.study_uid, delivered=False)
    node.cli("storage", "hold", second.study_uid, "--reason", "under review")

    before = json.loads(node.cli("storage", "status", "--json").stdout)
    assert before["exams_eligible"] == 1 and before["exams_held"] == 1
    assert before["source_bytes"] > 0 and before["pruned_instances"] == 0

    planned = json.loads(
        node.cli("storage", "prune", "--retention-days", "0", "--dry-run", "--json").stdout
    )
    assert [e["study_uid"] for e in planned["exams"]] == [first.study_uid]
    assert planned["dry_run"] and len(_files_on_disk(node, first.study_uid)) == FILES_PER_EXAM

    pruned = json.loads(node.cli("storage", "prune", "--retention-days", "0", "--json").stdout)
    assert [e["study_uid"] for e in pruned["exams"]] == [first.study_uid]
    item = pruned["exams"][0]
    assert item["reason"] == "age" and item["source_instances"] == 4
    assert item["output_instances"] == 0  # outputs are kept (retention_output_days unset)
    assert pruned["freed_bytes"] == item["source_bytes"] > 0
    # the four received images are gone, the 15 outputs stay; other exams untouched
    assert len(_files_on_disk(node, first.study_uid)) == OUTPUTS_PER_EXAM
    assert len(_files_on_disk(node, second.study_uid)) == FILES_PER_EXAM
    assert len(_files_on_disk(node, third.study_uid)) == FILES_PER_EXAM

    # the record and the result stay
    detail = exam_json(node, first.study_uid)
    assert detail["state"] == "scored" and detail["result"]["exam_score"] is not None
    db = Database(db_url)
    try:
        rows = _received_paths(db, first.study_uid)
        assert sum(1 for _, origin, at in rows if origin == "received" and at) == 4
        assert all(at is None for _, origin, at in rows if origin == "generated")
    finally:
        db.dispose()

    # the bytes answer 410 Gone with the reason; outputs are still served
    base = f"http://127.0.0.1:{node.http_port}/dicomweb/studies/{first.study_uid}"
    source_uid = str(first.datasets[next(iter(first.datasets))].SOPInstanceUID)
    series_uid = str(first.datasets[next(iter(first.datasets))].SeriesInstanceUID)
    gone = httpx.get(f"{base}/series/{series_uid}/instances/{source_uid}", timeout=30)
    assert gone.status_code == 410 and "retention" in gone.text
    study = httpx.get(
        base, timeout=30, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert study.status_code == 200 and study.content.count(b"DICM") == OUTPUTS_PER_EXAM

    # audited, with counts and no patient data
    events = [
        json.loads(line)
        for line in node.cli("audit", "export", "--action", "pruned").stdout.splitlines()
    ]
    assert [e["target"] for e in events] == [first.study_uid]
    assert events[0]["detail"]["instances"] == 4 and events[0]["actor"] == "retention"

    # a size limit recycles the oldest delivered exam once the hold is released, never the
    # undelivered third one, however small the limit
    node.cli("storage", "release", second.study_uid)
    recycled = json.loads(
        node.cli("storage", "prune", "--max-storage-gb", "0.000001", "--json").stdout
    )
    assert [e["study_uid"] for e in recycled["exams"]] == [second.study_uid]
    assert recycled["exams"][0]["reason"] == "storage"
    assert len(_files_on_disk(node, third.study_uid)) == FILES_PER_EXAM
    again = json.loads(node.cli("storage", "prune", "--retention-days", "0", "--json").stdout)
    assert again["exams"] == []

    metrics = httpx.get(f"http://127.0.0.1:{node.http_port}/metrics", timeout=30).text
    assert 'mammo_stored_bytes{origin="received"}' in metrics

    # the same bytes sent again are filed again, without re-opening the exam
    assert storescu(node.port, first.files[:1]).returncode == 0
    assert (
        len(_files_on_disk(node, first.study_uid)) == OUTPUTS_PER_EXAM + 1
    )  # one image back beside the outputs
    assert exam_json(node, first.study_uid)["state"] == "scored"
    assert node.stop() == 0


def test_serve_prunes_on_its_own(
    node_process: Any, tmp_path: Path, tiny_bundle: Path, synth_exams: list[Any], results_scp: Any
) -> None:
    node = scoring_node(
        node_process,
        tmp_path / "data",
        tiny_bundle,
        env={"MAMMO_RETENTION_DAYS": "0", "MAMMO_RETENTION_INTERVAL_SECONDS": "0.5"},
    ).start()
    add_destination_by_cli(node, "pacs", "RESULTS", results_scp.port)
    exam = synth_exams[0]
    send_and_wait(node, exam.files, exam.study_uid, delivered=True)
    wait_for(lambda: len(_files_on_disk(node, exam.study_uid)) == OUTPUTS_PER_EXAM, timeout=60)
    status = json.loads(node.cli("storage", "status", "--json").stdout)
    assert status["pruned_instances"] == 4
    assert exam_json(node, exam.study_uid)["state"] == "scored"
    assert node.stop() == 0
