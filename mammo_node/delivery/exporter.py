"""The exporter: delivers the durable outbox over C-STORE, with backoff and dead letters.

One row per (output instance, destination). Per destination, due rows go over one
association. Success and the warnings B000/B006/B007 count as delivered. A failure status or
a peer that cannot be reached is retried with exponential backoff until the row is older than
``outbox_max_age_seconds``, then it becomes a dead letter (``mammo-node outbox list/retry``).
An association *rejection* is a configuration error (wrong AE title, not allowed): reported
once on the destination and not retried in a loop until an operator re-queues it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mammo_node.config import Settings
from mammo_node.db.models import Destination, Exam, Instance, OutboxItem, Series, utcnow
from mammo_node.db.session import Database
from mammo_node.delivery.scu import (
    HeldInstance,
    Peer,
    SendReport,
    StoreOutcome,
    instances_held,
    send_files,
)
from mammo_node.domain import OutboxState
from mammo_node.errors import DeliveryError, MammoNodeError
from mammo_node.filing.storage import InstanceStore
from mammo_node.observe import audit, metrics
from mammo_node.observe.loops import LoopHealth
from mammo_node.receive.scp import build_client_ssl_context
from mammo_node.scrub import describe, scrub

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    item_id: int
    path: Path
    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""
    # the row was leased by an exporter that died or ran out of time: the object may have
    # reached the peer before that exporter could record it
    in_doubt: bool = False


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` failures: base * 2^(n-1), capped."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def exporter_id_prefix(settings: Settings) -> str:
    return f"{socket.gethostname()}/{settings.ae_title}/exporter/"


def default_exporter_id(settings: Settings) -> str:
    return f"{exporter_id_prefix(settings)}{os.getpid()}"


def _process_gone(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Exporter:
    """Delivers the outbox. Rows are leased before they are sent (PostgreSQL: ``FOR UPDATE
    SKIP LOCKED``), so several node processes sharing a database deliver each object once; a
    lease left by a process that died runs out after ``lease_seconds``."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: InstanceStore,
        *,
        exporter_id: str | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.exporter_id = exporter_id or default_exporter_id(settings)
        # one batch over one association: each object may take up to the DIMSE timeout
        self.lease_seconds = lease_seconds or max(300.0, 4 * settings.dimse_timeout)

    def release_dead_leases(self) -> int:
        """Leases held by exporter processes of this host that no longer run end at once
        (not after ``lease_seconds``): their rows are due again. The holder's name stays on
        the row, so the next exporter knows the object may already be at the peer."""
        prefix = exporter_id_prefix(self.settings)
        with self.db.session() as session:
            rows = session.scalars(
                select(OutboxItem).where(
                    OutboxItem.state == OutboxState.PENDING,
                    OutboxItem.leased_by.startswith(prefix),
                )
            ).all()
            freed = 0
            ended = utcnow() - dt.timedelta(seconds=1)
            for row in rows:
                if _process_gone(row.leased_by[len(prefix) :]):
                    row.leased_until = ended
                    freed += 1
        if freed:
            logger.info("freed %d outbox lease(s) of exporters that ended", freed)
        return freed

    def run_once(self, now: dt.datetime | None = None, batch: int = 64) -> int:
        """Deliver what is due. Returns how many rows were attempted."""
        now = now or utcnow()
        attempted = 0
        for destination_id, due in self._due(now, batch).items():
            attempted += len(due)
            try:
                self._deliver(destination_id, due)
            except Exception as exc:  # one destination's failure must not stall the others
                logger.exception("delivering %d output(s) failed", len(due))
                self._failed_safely(destination_id, due, describe(exc))
        return attempted

    def _due(self, now: dt.datetime, batch: int) -> dict[int, list[Due]]:
        """Lease the due rows (committed before anything is sent)."""
        until = now + dt.timedelta(seconds=self.lease_seconds)
        with self.db.session() as session:
            query = (
                select(OutboxItem)
                .join(Destination, OutboxItem.destination_fk == Destination.id)
                .where(
                    OutboxItem.state == OutboxState.PENDING,
                    OutboxItem.next_attempt_at <= now,
                    or_(OutboxItem.leased_until.is_(None), OutboxItem.leased_until < now),
                    Destination.enabled,
                    Destination.config_error == "",
                )
                .order_by(OutboxItem.id)
                .limit(batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=OutboxItem, skip_locked=True)
            items = session.scalars(query).all()
            in_doubt = {item.id for item in items if item.leased_by or item.in_doubt}
            for item in items:
                item.leased_by = self.exporter_id
                item.leased_until = until
            ids = [item.id for item in items]
            rows = (
                session.execute(
                    select(
                        OutboxItem.id,
                        OutboxItem.destination_fk,
                        Instance.rel_path,
                        Instance.sop_instance_uid,
                        Exam.study_uid,
                        Series.series_uid,
                    )
                    .join(Instance, OutboxItem.instance_fk == Instance.id)
                    .join(Series, Instance.series_fk == Series.id)
                    .join(Exam, Instance.exam_fk == Exam.id)
                    .where(OutboxItem.id.in_(ids))
                    .order_by(OutboxItem.id)
                ).all()
                if ids
                else []
            )
        due: dict[int, list[Due]] = defaultdict(list)
        for item_id, destination_id, rel_path, sop_uid, study_uid, series_uid in rows:
            due[destination_id].append(
                Due(
                    item_id,
                    self.store.path(rel_path),
                    sop_uid,
                    study_uid,
                    series_uid,
                    in_doubt=item_id in in_doubt,
                )
            )
        return due

    def _failed_safely(self, destination_id: int, due: list[Due], error: str) -> None:
        try:
            with self.db.read() as session:
                destination = session.get(Destination, destination_id)
                name = destination.name if destination is not None else str(destination_id)
            self._failed(name, due, None, error)
        except MammoNodeError:
            logger.exception("could not record a failed delivery; its lease runs out")

    def _leased(self, session: Session, item_id: int) -> OutboxItem | None:
        """The row, if this exporter still holds its lease (else another process took over)."""
        row = session.get(OutboxItem, item_id)
        if row is None or row.leased_by != self.exporter_id:
            return None
        row.leased_by = ""
        row.leased_until = None
        return row

    def _peer(self, destination: Destination) -> Peer:
        return Peer(
            destination.host,
            destination.port,
            destination.ae_title,
            self.settings.ae_title,
            build_client_ssl_context(self.settings) if destination.tls else None,
        )

    def _deliver(self, destination_id: int, due: list[Due]) -> None:
        with self.db.read() as session:
            destination = session.get(Destination, destination_id)
            assert destination is not None
            peer = self._peer(destination)
            name = destination.name
        due = self._settle_in_doubt(name, peer, due)
        if not due:
            return
        by_path = {d.path: d for d in due}
        recorded: set[int] = set()

        def on_outcome(outcome: StoreOutcome) -> None:
            # each acknowledged object is committed as delivered at once: a kill mid-batch
            # re-sends at most the object in flight, not the whole batch
            item = by_path.get(outcome.path)
            if item is not None and outcome.delivered:
                self._mark_delivered(name, [(item, outcome.status, outcome.comment)])
                recorded.add(item.item_id)

        try:
            report = send_files([d.path for d in due], peer, on_outcome=on_outcome)
        except (DeliveryError, OSError) as exc:
            logger.warning("destination %s unreachable: %s", name, exc)
            self._failed(name, due, None, scrub(str(exc)))
            return
        if report.rejected:
            self._rejected(destination_id, name, report.rejected, due)
            return
        self._record(name, [d for d in due if d.item_id not in recorded], report, len(recorded))

    def _settle_in_doubt(self, name: str, peer: Peer, due: list[Due]) -> list[Due]:
        """Objects an ended exporter may have delivered are first looked up at the peer
        (C-FIND): those it holds are recorded as delivered, not sent twice. A peer without a
        query service gets them again (at-least-once), counted as resent."""
        doubtful = [d for d in due if d.in_doubt]
        if not doubtful:
            return due
        try:
            held = instances_held(
                peer,
                [HeldInstance(d.study_uid, d.series_uid, d.sop_instance_uid) for d in doubtful],
            )
        except Exception as exc:  # a query that fails is no answer: send again
            logger.warning(
                "destination %s: no answer to the delivery check: %s", name, describe(exc)
            )
            held = None
        confirmed = [d for d in doubtful if held and d.sop_instance_uid in held]
        metrics.delivery_in_doubt(
            name, confirmed=len(confirmed), resent=len(doubtful) - len(confirmed)
        )
        if confirmed:
            self._mark_delivered(name, [(d, None, "") for d in confirmed], found_by_query=True)
            metrics.delivery_succeeded(name, len(confirmed))
            logger.info(
                "%d output(s) in flight when an exporter ended were already at %s: not resent",
                len(confirmed),
                name,
            )
        done = {d.item_id for d in confirmed}
        return [d for d in due if d.item_id not in done]

    def _record(self, name: str, due: list[Due], report: SendReport, already: int = 0) -> None:
        by_path = {o.path: o for o in report.outcomes}
        delivered, failed = [], []
        for item in due:
            outcome = by_path.get(item.path)
            if outcome is not None and outcome.delivered:
                delivered.append((item, outcome.status, outcome.comment))
            else:
                failed.append((item, outcome))
        self._mark_delivered(name, delivered)
        for item, outcome in failed:
            status = outcome.status if outcome else None
            why = (outcome.comment if outcome else "") or "no response"
            code = f"status 0x{status:04X}" if status is not None else "not sent"
            if outcome is not None and outcome.may_have_arrived:
                code = "no answer"
            self._failed(
                name,
                [item],
                status,
                f"{code}: {why}",
                in_doubt=outcome is not None and outcome.may_have_arrived,
            )
        if delivered or already:
            metrics.delivery_succeeded(name, len(delivered) + already)
            logger.info("delivered %d output(s) to %s", len(delivered) + already, name)

    def _mark_delivered(
        self,
        name: str,
        delivered: list[tuple[Due, int | None, str]],
        *,
        found_by_query: bool = False,
    ) -> None:
        if not delivered:
            return
        extra = {"found_by": "C-FIND"} if found_by_query else {}
        now = utcnow()
        with self.db.session() as session:
            for item, status, comment in delivered:
                row = session.get(OutboxItem, item.item_id)
                if row is None:
                    continue
                row.leased_by, row.leased_until = "", None  # delivered, whoever leases it
                row.state = OutboxState.DELIVERED
                row.in_doubt = False
                row.delivered_at = now
                row.attempts += 1
                row.last_status = status
                row.last_error = comment if status else ""
                audit.record_in(
                    session,
                    "node",
                    audit.DELIVERED,
                    item.sop_instance_uid,
                    destination=name,
                    status=status,
                    **extra,
                )

    def _failed(
        self,
        name: str,
        due: list[Due],
        status: int | None,
        error: str,
        *,
        in_doubt: bool = False,
    ) -> None:
        metrics.delivery_failed(name, len(due))
        now = utcnow()
        max_age = dt.timedelta(seconds=self.settings.outbox_max_age_seconds)
        with self.db.session() as session:
            for item in due:
                row = self._leased(session, item.item_id)
                if row is None:
                    continue
                row.attempts += 1
                row.last_status = status
                row.last_error = error[:2000]
                row.in_doubt = row.in_doubt or in_doubt
                if now - row.created_at >= max_age:
                    row.state = OutboxState.DEAD
                    audit.record_in(
                        session,
                        "node",
                        audit.DELIVERY_FAILED,
                        item.sop_instance_uid,
                        destination=name,
                        status=status,
                        error=error[:500],
                        attempts=row.attempts,
                    )
                    logger.error(
                        "outbox %d (%s) is a dead letter after %d attempts: %s",
                        row.id,
                        item.sop_instance_uid,
                        row.attempts,
                        error,
                    )
                else:
                    delay = backoff_seconds(
                        row.attempts,
                        self.settings.outbox_backoff_base,
                        self.settings.outbox_backoff_max,
                    )
                    row.next_attempt_at = now + dt.timedelta(seconds=delay)

    def _rejected(self, destination_id: int, name: str, why: str, due: list[Due]) -> None:
        with self.db.session() as session:
            for item in due:  # not attempted: free for the retry after the fix
                self._leased(session, item.item_id)
            destination = session.get(Destination, destination_id)
            if destination is None:
                return
            destination.config_error = why[:2000]
        logger.error(
            "destination %s rejected the association: %s. Deliveries to it are paused; fix the "
            "destination and run `mammo-node outbox retry --destination %s`",
            name,
            why,
            name,
        )


def retry(db: Database, *, destination: str | None = None, item_id: int | None = None) -> int:
    """Re-queue dead letters (and clear a destination's configuration error)."""
    now = utcnow()
    with db.session() as session:
        query = select(OutboxItem).where(OutboxItem.state == OutboxState.DEAD)
        if item_id is not None:
            query = select(OutboxItem).where(
                OutboxItem.id == item_id, OutboxItem.state != OutboxState.DELIVERED
            )
        if destination is not None:
            target = session.scalars(
                select(Destination).where(Destination.name == destination)
            ).first()
            if target is None:
                raise MammoNodeError(f"no destination named {destination!r}")
            target.config_error = ""
            query = query.where(OutboxItem.destination_fk == target.id)
        rows = session.scalars(query).all()
        for row in rows:
            row.state = OutboxState.PENDING
            row.created_at = now  # a fresh maximum age
            row.next_attempt_at = now
            row.leased_by, row.leased_until = "", None
        return len(rows)


class ExporterThread(threading.Thread):
    def __init__(self, exporter: Exporter, interval: float = 1.0) -> None:
        super().__init__(name="exporter", daemon=True)
        self.exporter = exporter
        self.interval = interval
        self.stopping = threading.Event()
        self._wakeup = threading.Event()
        self.health = LoopHealth("exporter", is_alive=self.is_alive)

    def wake(self) -> None:
        """New deliveries are due: look now instead of at the next poll."""
        self._wakeup.set()

    def run(self) -> None:
        self.health.started = True
        try:
            self.exporter.release_dead_leases()
        except MammoNodeError:
            logger.exception("could not free the outbox leases of ended exporters")
        while not self.stopping.is_set():
            self._wakeup.clear()
            try:
                busy = self.exporter.run_once()
            except Exception as exc:
                self.health.failed(exc, "export pass")
                busy = 0
            else:
                self.health.succeeded()
            if not busy:
                self._wakeup.wait(self.interval)

    def stop(self) -> None:
        self.health.stopped = True
        self.stopping.set()
        self._wakeup.set()
