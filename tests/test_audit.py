"""The audit trail: append-only rows, batched and immediate writes, JSON-lines export."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from mammo_node.cli.audit import audit_app
from mammo_node.db.models import AuditEvent
from mammo_node.db.session import Database, upgrade
from mammo_node.observe import audit
from mammo_node.observe.audit import AuditError, AuditLog, export_jsonl, iter_events, record_in


@pytest.fixture
def db(db_url: str) -> Database:
    upgrade(db_url)
    database = Database(db_url)
    yield database  # type: ignore[misc]
    database.dispose()


def test_queued_and_immediate_events_are_written_in_order(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    log = AuditLog(db, interval=0.05)
    log.start()
    for n in range(120):
        log.record("rachel", audit.VIEWED, f"1.2.3.{n}", page="exam")
    log.record_now("alice", audit.LOGIN, peer="10.0.0.7")
    log.flush()
    log.stop()
    events = list(iter_events(db, chunk=50))  # several chunks
    assert len(events) == 121
    viewed = [e for e in events if e["action"] == audit.VIEWED]
    assert [e["target"] for e in viewed] == [f"1.2.3.{n}" for n in range(120)]
    assert next(e for e in events if e["action"] == audit.LOGIN)["detail"] == {"peer": "10.0.0.7"}
    assert "audit viewed by rachel" in caplog.text and "1.2.3." not in caplog.text


def test_rows_cannot_be_changed_or_deleted(db: Database) -> None:
    with db.session() as session:
        row = record_in(session, "node", audit.DELIVERED, "2.25.1", destination="pacs")
    with pytest.raises(AuditError, match="append-only"), db.session() as session:
        stored = session.get(AuditEvent, row.id)
        assert stored is not None
        stored.actor = "someone else"
    with pytest.raises(AuditError, match="append-only"), db.session() as session:
        stored = session.get(AuditEvent, row.id)
        session.delete(stored)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 1
        assert session.get(AuditEvent, row.id).actor == "node"  # type: ignore[union-attr]


def test_event_in_the_callers_transaction_is_rolled_back_with_it(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.session() as session:
        record_in(session, "node", audit.DELIVERED, "2.25.9")
        raise Boom
    assert list(iter_events(db)) == []


def test_export_filters_and_cli(db: Database, db_url: str, tmp_path: Path) -> None:
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session() as session:
        session.add(
            AuditEvent(
                at=old,
                actor="MODALITY",
                action=audit.RECEIVED,
                target="2.25.7",
                detail={"source": "dimse"},
            )
        )
    log = AuditLog(db)
    log.record("rachel", audit.VIEWED, "2.25.7")
    log.record("node", audit.DELIVERED, "2.25.8", destination="pacs")
    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            lines.append(text)

    assert export_jsonl(db, Sink(), since=old + dt.timedelta(days=1)) == 2  # type: ignore[arg-type]
    assert [json.loads(t)["action"] for t in lines] == [audit.VIEWED, audit.DELIVERED]

    out = tmp_path / "audit.jsonl"
    cli = typer.Typer()
    cli.add_typer(audit_app, name="audit")  # as mammo_node.cli mounts it
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "export",
            "--db-url",
            db_url,
            "--data-dir",
            str(tmp_path),
            "--action",
            "received",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["actor"], e["target"], e["detail"]) for e in exported] == [
        ("MODALITY", "2.25.7", {"source": "dimse"})
    ]
    assert exported[0]["at"].startswith("2026-01-01T00:00:00")
    bad = CliRunner().invoke(cli, ["audit", "export", "--db-url", db_url, "--since", "x"])
    assert bad.exit_code != 0 and "--since" in bad.output
