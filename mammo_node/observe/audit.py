"""The audit trail: who sent what, what was sent where, who looked at which exam.

Rows in ``audit_events`` are only ever added. The ORM refuses to update or delete one (see the
mapper events at the bottom), and nothing in mammo_node issues SQL that would. A row holds the
actor (token name, AE title, "node"), the action, a target (a UID or a destination name) and a
small JSON detail with counts and UIDs - never patient names, IDs or birth dates. Log lines
written here name only the action and the actor.

Three ways to write:
- :func:`record_in` adds the event to the caller's transaction, so that a state change and its
  audit row commit together (the exporter marking an outbox row delivered);
- :meth:`AuditLog.record` queues the event for a background thread that inserts in batches, so
  that a busy read path (WADO-RS, pages) does not pay a commit per request;
- :meth:`AuditLog.record_now` commits at once (logins, STOW-RS).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mammo_node.db.models import AuditEvent, utcnow
from mammo_node.db.session import Database
from mammo_node.errors import MammoNodeError
from mammo_node.observe.loops import LoopHealth

logger = logging.getLogger(__name__)

# --- actions ------------------------------------------------------------------------------------
RECEIVED = "received"  # instances arrived (detail: source, peer, sop_instance_uids, outcome counts)
STOW_FAILED = "stow_failed"  # instances of a STOW-RS request refused (detail: reasons)
DELIVERED = "delivered"  # a result object reached a destination
DELIVERY_FAILED = "delivery_failed"  # a delivery attempt failed (detail: status / error)
RETRIEVED = "retrieved"  # DICOMweb WADO-RS retrieve or metadata
SEARCHED = "searched"  # DICOMweb QIDO-RS search (detail: level and the query keys, not values)
VIEWED = "viewed"  # an exam page or exam JSON was looked at
INSTANCE_CONFLICT = "instance_conflict"  # other bytes under a stored UID, kept aside, refused
INSTANCE_REPLACED = "instance_replaced"  # other bytes under a stored UID replaced it (policy)
EXAM_HELD = "exam_held"  # a study's objects disagree on the patient: not scored
LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGOUT = "logout"
PRUNED = "pruned"  # retention deleted an exam's files (detail: reason, instances, bytes, UIDs)
HOLD = "retention_hold"  # an exam was put on retention hold
HOLD_RELEASED = "retention_released"
BACKUP = "backup"  # a backup was written (detail: directory, counts)
OUTCOMES_IMPORTED = "outcomes_imported"  # screening outcomes linked to exams (detail: counts)

_MAX_TARGET = 128
_MAX_ACTOR = 128


class AuditError(MammoNodeError):
    """The audit trail was used in a way it forbids (changing a row) or could not be written."""


@dataclass(frozen=True)
class AuditRecord:
    actor: str
    action: str
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    at: dt.datetime = field(default_factory=utcnow)

    def row(self) -> AuditEvent:
        return AuditEvent(
            at=self.at,
            actor=self.actor[:_MAX_ACTOR] or "-",
            action=self.action[:64],
            target=self.target[:_MAX_TARGET],
            detail=self.detail,
        )


def record_in(
    session: Session, actor: str, action: str, target: str = "", **detail: Any
) -> AuditEvent:
    """Add an audit row to the caller's open transaction (committed with it)."""
    row = AuditRecord(actor, action, target, detail).row()
    session.add(row)
    logger.info("audit %s by %s", action, actor or "-")
    return row


class AuditLog:
    """Audit writer shared by one process: queued batches plus immediate writes."""

    def __init__(self, db: Database, *, batch_size: int = 500, interval: float = 0.5) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self._queue: queue.SimpleQueue[AuditRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._pending = 0
        self.health = LoopHealth("audit", is_alive=self._running)

    # --- writing --------------------------------------------------------------------------
    def record(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        """Queue an event; written within ``interval`` seconds (or at once without a thread)."""
        item = AuditRecord(actor, action, target, detail)
        if self._thread is None:
            self._write([item])
            return
        with self._lock:
            self._pending += 1
        self._queue.put(item)

    def record_now(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        """Write an event in its own transaction before returning."""
        self._write([AuditRecord(actor, action, target, detail)])

    def _write(self, items: list[AuditRecord]) -> None:
        with self.db.session() as session:
            session.add_all(item.row() for item in items)
        for item in items:
            logger.info("audit %s by %s", item.action, item.actor or "-")

    # --- background thread ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self.health.started, self.health.stopped = True, False
        self._thread.start()

    def _running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.health.stopped = True
        self._queue.put(None)
        thread.join(timeout)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every queued event is in the database."""
        with self._flushed:
            self._flushed.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[AuditRecord] = []
            try:
                first = self._queue.get(timeout=self.interval)
            except queue.Empty:
                continue
            if first is None:
                stopping = True
            else:
                batch.append(first)
                # gather for one interval: one commit (and fsync) per interval, not per event
                deadline = time.monotonic() + self.interval
                while len(batch) < self.batch_size and (wait := deadline - time.monotonic()) > 0:
                    try:
                        item = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
            while not stopping and len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if batch:
                self._write_batch(batch)

    def _write_batch(self, batch: list[AuditRecord]) -> None:
        try:
            self._write(batch)
        except Exception as exc:
            # the database is down (or a row cannot be written): keep the events for the
            # next round, do not spin, and let /readyz and the metrics say so
            self.health.failed(exc, f"writing {len(batch)} event(s) (kept, retrying)")
            threading.Event().wait(self.interval)
            for item in batch:
                self._queue.put(item)
            return
        self.health.succeeded()
        with self._flushed:
            self._pending -= len(batch)
            self._flushed.notify_all()


# --- reading and export ------------------------------------------------------------------------
def iter_events(
    db: Database,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    action: str | None = None,
    actor: str | None = None,
    chunk: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Audit events in order of insertion, read in chunks (keyset pagination on id)."""
    last_id = 0
    while True:
        with db.read() as session:
            query = select(AuditEvent).where(AuditEvent.id > last_id)
            if since is not None:
                query = query.where(AuditEvent.at >= since)
            if until is not None:
                query = query.where(AuditEvent.at < until)
            if action:
                query = query.where(AuditEvent.action == action)
            if actor:
                query = query.where(AuditEvent.actor == actor)
            rows = session.scalars(query.order_by(AuditEvent.id).limit(chunk)).all()
            events = [event_json(row) for row in rows]
        if not events:
            return
        yield from events
        last_id = events[-1]["id"]


def event_json(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "detail": row.detail or {},
    }


def export_jsonl(db: Database, out: TextIO, **filters: Any) -> int:
    """Write the selected events to ``out`` as JSON lines; returns how many."""
    count = 0
    for item in iter_events(db, **filters):
        out.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


# --- append-only, as far as the ORM is concerned -------------------------------------------
@event.listens_for(AuditEvent, "before_update")
def _refuse_update(_mapper: Any, _connection: Any, target: AuditEvent) -> None:
    raise AuditError(f"audit event {target.id} cannot be changed: the audit trail is append-only")


@event.listens_for(AuditEvent, "before_delete")
def _refuse_delete(_mapper: Any, _connection: Any, target: AuditEvent) -> None:
    raise AuditError(f"audit event {target.id} cannot be deleted: the audit trail is append-only")
