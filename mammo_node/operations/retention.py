"""Retention: delete the images of exams whose results were delivered, oldest first.

A screening node receives ~100 GB a day; without retention the disk fills in days and every
association is then refused (A700). Like Orthanc's MaximumStorageSize / StorageRecycling and
dcm4chee's retention policies, two limits free space:

- ``retention_days``: received images are deleted this long after the last delivery of their
  exam's results;
- ``max_storage_gb``: while more than this is stored, the oldest fully-delivered exams are
  recycled first, however young.

Only an exam that is SCORED, not held (``retention_hold``) and whose every outbox row is
delivered is *eligible*: an unscored, partial, failed, re-opened, undelivered or held exam is
never touched. The node's own outputs (SR, SC, SEG) are kept for ever unless
``retention_output_days`` is set, and are never deleted before their sources.

The database keeps every row: an instance whose file is deleted gets ``pruned_at``, the exam
keeps its record and result, and DICOMweb answers 410 Gone for its bytes. Pruning commits the
mark (with its audit row) first and deletes the files after, so a crash in between leaves only
files that the next pass deletes (:func:`sweep_pruned_files`), never a row without its file.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from mammo_node.config import Settings
from mammo_node.db.models import Exam, Instance, OutboxItem, utcnow
from mammo_node.db.session import Database
from mammo_node.domain import ExamState, Origin
from mammo_node.errors import MammoNodeError, StorageError
from mammo_node.filing.storage import InstanceStore
from mammo_node.observe import audit, metrics
from mammo_node.observe.loops import LoopHealth

logger = logging.getLogger(__name__)

ACTOR = "retention"
GB = 1024**3


class RetentionError(MammoNodeError):
    """Retention could not run (a bad policy, an exam that is not eligible)."""


@dataclass(frozen=True)
class RetentionPolicy:
    """The limits retention enforces; ``None`` means that limit is off."""

    retention_days: float | None = None
    max_storage_bytes: int | None = None
    output_days: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        limit = settings.max_storage_gb
        return cls(
            retention_days=settings.retention_days,
            max_storage_bytes=int(limit * GB) if limit is not None else None,
            output_days=settings.retention_output_days,
        )

    @property
    def active(self) -> bool:
        return self.retention_days is not None or self.max_storage_bytes is not None


@dataclass
class ExamToPrune:
    """One eligible exam and what pruning it deletes."""

    exam_id: int
    study_uid: str
    delivered_at: dt.datetime
    reason: str  # "age" (retention_days), "storage" (max_storage_gb), "outputs" (output_days)
    source_instances: int = 0
    source_bytes: int = 0
    output_instances: int = 0
    output_bytes: int = 0
    sop_instance_uids: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.source_bytes + self.output_bytes

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["delivered_at"] = self.delivered_at.isoformat()
        data.pop("exam_id")
        data.pop("sop_instance_uids")
        return data


@dataclass
class StorageStatus:
    """What the store holds, by origin, and what retention may free."""

    stored_bytes: int
    stored_instances: int
    source_bytes: int
    output_bytes: int
    pruned_instances: int
    pruned_bytes: int
    exams_eligible: int
    exams_held: int
    free_disk_bytes: int | None
    policy: RetentionPolicy

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["policy"] = asdict(self.policy)
        return data


@dataclass
class PruneReport:
    dry_run: bool
    stored_bytes_before: int
    stored_bytes_after: int
    exams: list[ExamToPrune] = field(default_factory=list)
    files_missing: int = 0
    skipped: list[str] = field(default_factory=list)  # study UIDs no longer eligible

    @property
    def freed_bytes(self) -> int:
        return sum(e.bytes for e in self.exams)

    @property
    def freed_instances(self) -> int:
        return sum(e.source_instances + e.output_instances for e in self.exams)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "stored_bytes_before": self.stored_bytes_before,
            "stored_bytes_after": self.stored_bytes_after,
            "freed_bytes": self.freed_bytes,
            "freed_instances": self.freed_instances,
            "files_missing": self.files_missing,
            "skipped": self.skipped,
            "exams": [e.to_json() for e in self.exams],
        }


# --- which exams are eligible -------------------------------------------------------------
def _delivery_per_exam() -> Any:
    """Per exam: outbox rows, rows not delivered, and the last delivery time."""
    return (
        select(
            Instance.exam_fk.label("exam_fk"),
            func.count(OutboxItem.id).label("rows"),
            func.sum(case((OutboxItem.state != "delivered", 1), else_=0)).label("undelivered"),
            func.max(OutboxItem.delivered_at).label("delivered_at"),
        )
        .join(Instance, OutboxItem.instance_fk == Instance.id)
        .group_by(Instance.exam_fk)
        .subquery()
    )


def _eligible(delivery: Any) -> Any:
    return and_(
        Exam.state == ExamState.SCORED.value,
        Exam.retention_hold.is_(False),
        delivery.c.rows > 0,
        delivery.c.undelivered == 0,
    )


def _stored(origin: Origin | None = None) -> Any:
    condition = Instance.pruned_at.is_(None)
    return condition if origin is None else and_(condition, Instance.origin == origin.value)


def stored_bytes(session: Session) -> int:
    return int(
        session.scalar(select(func.coalesce(func.sum(Instance.size_bytes), 0)).where(_stored()))
        or 0
    )


def storage_status(
    db: Database, store: InstanceStore | None, policy: RetentionPolicy
) -> StorageStatus:
    with db.read() as session:
        by_origin = dict(
            session.execute(
                select(Instance.origin, func.coalesce(func.sum(Instance.size_bytes), 0))
                .where(_stored())
                .group_by(Instance.origin)
            ).all()
        )
        stored_count = session.scalar(select(func.count()).where(_stored())) or 0
        pruned_count, pruned_size = session.execute(
            select(func.count(), func.coalesce(func.sum(Instance.size_bytes), 0)).where(
                Instance.pruned_at.is_not(None)
            )
        ).one()
        delivery = _delivery_per_exam()
        eligible = session.scalar(
            select(func.count())
            .select_from(Exam)
            .join(delivery, delivery.c.exam_fk == Exam.id)
            .where(_eligible(delivery))
            .where(Exam.id.in_(select(Instance.exam_fk).where(_stored(Origin.RECEIVED))))
        )
        held = session.scalar(select(func.count()).where(Exam.retention_hold.is_(True)))
    source = int(by_origin.get(Origin.RECEIVED.value, 0))
    output = int(by_origin.get(Origin.GENERATED.value, 0))
    return StorageStatus(
        stored_bytes=source + output,
        stored_instances=int(stored_count),
        source_bytes=source,
        output_bytes=output,
        pruned_instances=int(pruned_count),
        pruned_bytes=int(pruned_size),
        exams_eligible=int(eligible or 0),
        exams_held=int(held or 0),
        free_disk_bytes=store.free_bytes() if store is not None else None,
        policy=policy,
    )


def plan_prune(
    session: Session, policy: RetentionPolicy, now: dt.datetime | None = None
) -> tuple[int, list[ExamToPrune]]:
    """The exams to prune now, oldest delivery first, and the bytes stored before."""
    now = now or utcnow()
    before = stored_bytes(session)
    delivery = _delivery_per_exam()
    sizes = (
        select(
            Instance.exam_fk.label("exam_fk"),
            func.sum(case((Instance.origin == Origin.RECEIVED.value, 1), else_=0)).label("n_src"),
            func.sum(
                case((Instance.origin == Origin.RECEIVED.value, Instance.size_bytes), else_=0)
            ).label("src_bytes"),
            func.sum(case((Instance.origin == Origin.GENERATED.value, 1), else_=0)).label("n_out"),
            func.sum(
                case((Instance.origin == Origin.GENERATED.value, Instance.size_bytes), else_=0)
            ).label("out_bytes"),
        )
        .where(_stored())
        .group_by(Instance.exam_fk)
        .subquery()
    )
    rows = session.execute(
        select(
            Exam.id,
            Exam.study_uid,
            delivery.c.delivered_at,
            sizes.c.n_src,
            sizes.c.src_bytes,
            sizes.c.n_out,
            sizes.c.out_bytes,
        )
        .join(delivery, delivery.c.exam_fk == Exam.id)
        .join(sizes, sizes.c.exam_fk == Exam.id)
        .where(_eligible(delivery))
        .order_by(delivery.c.delivered_at, Exam.id)
    ).all()
    chosen: list[ExamToPrune] = []
    remaining = before
    for exam_id, study_uid, delivered_at, n_src, src_bytes, n_out, out_bytes in rows:
        delivered_at = _aware(delivered_at)
        age_days = (now - delivered_at).total_seconds() / 86400
        reason = ""
        if n_src:
            if policy.retention_days is not None and age_days >= policy.retention_days:
                reason = "age"
            elif policy.max_storage_bytes is not None and remaining > policy.max_storage_bytes:
                reason = "storage"
        outputs_due = bool(n_out) and (
            policy.output_days is not None
            and age_days >= policy.output_days
            and (reason != "" or not n_src)  # never before their sources
        )
        if not reason and not outputs_due:
            continue
        item = ExamToPrune(exam_id, study_uid, delivered_at, reason or "outputs")
        if reason:
            item.source_instances, item.source_bytes = int(n_src), int(src_bytes or 0)
        if outputs_due:
            item.output_instances, item.output_bytes = int(n_out), int(out_bytes or 0)
        remaining -= item.bytes
        chosen.append(item)
    return before, chosen


def _aware(value: dt.datetime) -> dt.datetime:
    # func.max() of a UTCDateTime column comes back without the type's conversion on SQLite
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- pruning ------------------------------------------------------------------------------
def prune(
    db: Database,
    store: InstanceStore,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    actor: str = ACTOR,
    view_cache: Path | None = None,
) -> PruneReport:
    """Apply ``policy``: mark and audit each exam's pruned instances, then delete the files."""
    now = now or utcnow()
    with db.read() as session:
        before, plan = plan_prune(session, policy, now)
    report = PruneReport(dry_run, before, before - sum(e.bytes for e in plan))
    if dry_run:
        report.exams = plan
        return report
    for item in plan:
        paths = _mark_pruned(db, item, actor, now)
        if paths is None:
            report.skipped.append(item.study_uid)
            continue
        report.exams.append(item)
        report.files_missing += _delete(store, paths)
        if view_cache is not None:
            _drop_rendered_views(view_cache, item.sop_instance_uids)
        metrics.instances_pruned(item.source_instances, item.source_bytes, "received")
        metrics.instances_pruned(item.output_instances, item.output_bytes, "generated")
        logger.info(
            "pruned exam %s (%s): %d instance(s), %d bytes",
            item.study_uid,
            item.reason,
            item.source_instances + item.output_instances,
            item.bytes,
        )
    report.stored_bytes_after = before - report.freed_bytes
    sweep_pruned_files(db, store)
    return report


def _mark_pruned(db: Database, item: ExamToPrune, actor: str, now: dt.datetime) -> list[str] | None:
    """Mark the instances pruned and audit it in one transaction; None when no longer eligible.

    The exam row is locked and its eligibility checked again, so an image arriving (which
    re-opens the exam) or a new result being queued between the plan and here wins.
    """
    with db.session() as session:
        exam = session.get(Exam, item.exam_id, with_for_update=True)
        delivery = _delivery_per_exam()
        still = session.scalar(
            select(func.count())
            .select_from(Exam)
            .join(delivery, delivery.c.exam_fk == Exam.id)
            .where(Exam.id == item.exam_id, _eligible(delivery))
        )
        if exam is None or not still:
            return None
        origins = []
        if item.source_instances:
            origins.append(Origin.RECEIVED.value)
        if item.output_instances:
            origins.append(Origin.GENERATED.value)
        rows = session.scalars(
            select(Instance).where(
                Instance.exam_fk == item.exam_id, _stored(), Instance.origin.in_(origins)
            )
        ).all()
        for row in rows:
            row.pruned_at = now
        audit.record_in(
            session,
            actor,
            audit.PRUNED,
            item.study_uid,
            reason=item.reason,
            instances=len(rows),
            bytes=sum(r.size_bytes for r in rows),
            delivered_at=item.delivered_at.isoformat(),
            sop_instance_uids=[r.sop_instance_uid for r in rows],
        )
        item.sop_instance_uids = [r.sop_instance_uid for r in rows]
        return [r.rel_path for r in rows]


def _delete(store: InstanceStore, rel_paths: list[str]) -> int:
    """Delete files; returns how many were already gone."""
    missing = 0
    for rel_path in rel_paths:
        try:
            path = store.path(rel_path)
            if not path.exists():
                missing += 1
                continue
            path.unlink()
        except (OSError, StorageError):
            logger.exception("could not delete the pruned file %s", rel_path)
    return missing


def _drop_rendered_views(cache: Path, sop_uids: list[str]) -> None:
    """The web's downsampled PNGs of pruned images are pixels too: they go with the files."""
    for sop_uid in sop_uids:
        for png in cache.glob(f"{sop_uid}.*.png"):
            png.unlink(missing_ok=True)


def sweep_pruned_files(db: Database, store: InstanceStore, *, days: float = 7.0) -> int:
    """Delete files still on disk whose rows were marked pruned lately (a crash in between)."""
    since = utcnow() - dt.timedelta(days=days)
    with db.read() as session:
        paths = session.scalars(
            select(Instance.rel_path).where(
                Instance.pruned_at.is_not(None), Instance.pruned_at >= since
            )
        ).all()
    removed = 0
    for rel_path in paths:
        try:
            path = store.path(rel_path)
            if path.is_file():
                path.unlink()
                removed += 1
        except (OSError, StorageError):
            logger.exception("could not delete the pruned file %s", rel_path)
    if removed:
        logger.info("deleted %d file(s) left behind by an interrupted prune", removed)
    return removed


# --- holds --------------------------------------------------------------------------------
def set_hold(
    db: Database, study_uid: str, held: bool, reason: str = "", actor: str = "cli"
) -> None:
    """Put an exam on retention hold (its images are never pruned) or release it."""
    from mammo_node.db import repo
    from mammo_node.exams import ExamNotFoundError

    with db.session() as session:
        exam = repo.exam_by_uid(session, study_uid)
        if exam is None:
            raise ExamNotFoundError(f"no exam with StudyInstanceUID {study_uid}")
        exam.retention_hold = held
        exam.retention_hold_reason = reason if held else ""
        audit.record_in(
            session, actor, audit.HOLD if held else audit.HOLD_RELEASED, study_uid, reason=reason
        )


class RetentionThread(threading.Thread):
    """`serve`'s periodic prune: every ``retention_interval_seconds`` while a limit is set."""

    def __init__(self, settings: Settings, db: Database, store: InstanceStore) -> None:
        super().__init__(name="retention", daemon=True)
        self.policy = RetentionPolicy.from_settings(settings)
        self.interval = settings.retention_interval_seconds
        self.db = db
        self.store = store
        self.view_cache = settings.data_dir / "cache" / "views"
        self.stopping = threading.Event()
        self.health = LoopHealth("retention", is_alive=self.is_alive)

    def run(self) -> None:
        self.health.started = True
        try:
            sweep_pruned_files(self.db, self.store)
        except Exception as exc:  # the sweep is retried by every prune pass
            self.health.failed(exc, "sweeping pruned files")
        while not self.stopping.wait(self.interval):
            try:
                report = prune(self.db, self.store, self.policy, view_cache=self.view_cache)
            except Exception as exc:  # any fault: counted, logged, shown; retried next pass
                self.health.failed(exc, f"retention pass (retried in {self.interval:.0f} s)")
                continue
            self.health.succeeded()
            if report.exams:
                logger.info(
                    "retention freed %d bytes from %d exam(s)",
                    report.freed_bytes,
                    len(report.exams),
                )

    def stop(self) -> None:
        self.health.stopped = True
        self.stopping.set()
