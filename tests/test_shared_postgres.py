"""Two `serve` processes on one PostgreSQL with one shared instance store, both receiving:
each exam is scored once and each output delivered once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.nodeops import StoreSCP, add_destination_by_cli, exam_json, scoring_node
from tests.helpers.tools import storescu, wait_for


@pytest.fixture
def results_scp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received").start()
    yield scp
    scp.stop()


@pytest.mark.postgres
def test_two_nodes_share_postgres_and_the_store(
    node_process: Any,
    tmp_path: Path,
    tiny_bundle: Path,
    synth_exams: list[Any],
    results_scp: Any,
    pg_url: str,
) -> None:
    shared = tmp_path / "shared-data"
    first_node = scoring_node(node_process, shared, tiny_bundle, db_url=pg_url).start()
    add_destination_by_cli(first_node, "pacs", "RESULTS", results_scp.port)
    second_node = scoring_node(node_process, shared, tiny_bundle, db_url=pg_url).start()
    one, two, three = synth_exams
    assert storescu(first_node.port, one.files).returncode == 0
    assert storescu(second_node.port, two.files).returncode == 0
    # one exam's views arrive half at each node
    assert storescu(first_node.port, three.files[:2]).returncode == 0
    assert storescu(second_node.port, three.files[2:]).returncode == 0

    def delivered(exam: Any) -> dict[str, Any] | None:
        detail = exam_json(first_node, exam.study_uid)
        result = detail.get("result")
        if detail["state"] != "scored" or not result:
            return None
        states = [d["state"] for d in result["deliveries"]]
        return detail if len(states) == 13 and set(states) == {"delivered"} else None

    details = [
        wait_for(lambda e=exam: delivered(e), timeout=240, interval=0.5) for exam in synth_exams
    ]
    from sqlalchemy import func, select

    from mammo_node.db.models import Result
    from mammo_node.db.session import Database

    db = Database(pg_url)
    try:
        with db.read() as session:
            per_exam = session.execute(
                select(Result.exam_fk, func.count()).group_by(Result.exam_fk)
            ).all()
    finally:
        db.dispose()
    assert sorted(n for _, n in per_exam) == [1, 1, 1]  # each exam scored once
    attempts = [d["attempts"] for detail in details for d in detail["result"]["deliveries"]]
    assert len(attempts) == 39
    # each outbox row is leased by one node's exporter (FOR UPDATE SKIP LOCKED): sent once
    assert all(a == 1 for a in attempts), f"delivery attempts {sorted(set(attempts))}"
    events = first_node.cli("audit", "export", "--action", "delivered").stdout.splitlines()
    delivered_uids = [json.loads(e)["target"] for e in events]
    assert len(delivered_uids) == 39 and len(set(delivered_uids)) == 39  # each output once
    assert first_node.stop() == 0 and second_node.stop() == 0
