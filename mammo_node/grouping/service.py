"""The grouping service: checks pixel data of new images and moves exams out of RECEIVING.

Runs as a thread of ``mammo-node serve`` (one per process; on PostgreSQL several processes
can share a database: rows are claimed with ``FOR UPDATE SKIP LOCKED``). The C-STORE handler
only persists and indexes; decoding pixels happens here, off the receive path.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.pixels import pixel_array
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from mammo_node.config import Settings
from mammo_node.db import repo
from mammo_node.db.models import Exam, Instance, utcnow
from mammo_node.db.session import Database
from mammo_node.domain import ExamState, PixelCheck
from mammo_node.filing.storage import InstanceStore, file_sha256
from mammo_node.grouping.rules import decide
from mammo_node.limits import ImageLimits, ImageTooLargeError, check_before_decode
from mammo_node.observe import audit
from mammo_node.observe.loops import LoopHealth
from mammo_node.sandbox import Sandbox, SandboxCrash
from mammo_node.scrub import describe

logger = logging.getLogger(__name__)

#: a READY exam holds the background hashing this long after it became ready (a worker claims
#: it within its poll interval); one no worker takes, say with no model loaded, stops holding it
HASH_WAITS_FOR_READY_SECONDS = 30.0


@dataclass(frozen=True)
class PixelReport:
    ok: bool
    detail: str


def _native_length_check(path: str, limits: ImageLimits) -> PixelReport | None:
    """For uncompressed pixel data the check is arithmetic: the value must hold every pixel.

    Returns None when the data is encapsulated (compressed) and must really be decoded; refuses
    (before any decode) an image larger than the limits or whose codestream disagrees with it.
    """
    ds = dcmread(path, defer_size=1024)
    try:
        check_before_decode(ds, limits, path=Path(path), frames=1)
    except ImageTooLargeError as exc:
        return PixelReport(False, str(exc))
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or syntax.is_compressed or syntax.is_deflated:
        return None
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    if element is None:
        return PixelReport(False, "no pixel data")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = rows * columns * samples * frames * bits // 8
    length = getattr(element, "length", None)
    if length is None:
        length = len(element.value or b"")
    if not rows or not columns or bits not in (8, 16, 32) or length < expected:
        return PixelReport(
            False,
            f"pixel data holds {length} bytes; {rows}x{columns}x{samples} samples of {bits} bits"
            f" x {frames} frame(s) need {expected}",
        )
    return PixelReport(True, f"{columns}x{rows} uncompressed, {length} bytes")


def check_pixels(path: str, limits: ImageLimits | None = None) -> PixelReport:
    """Can the pixels be read? Uncompressed: the length adds up; compressed: decode the first
    frame once (in the decoder sandbox when called by the grouper).

    Any decoder failure is a reason for not scoring, not a crash.
    """
    limits = limits or ImageLimits()
    try:
        native = _native_length_check(path, limits)
        if native is not None:
            return native
    except Exception as exc:  # a header pydicom cannot parse: let the decoder say why
        logger.debug("length check of %s failed: %s", path, type(exc).__name__)
    try:
        pixels = pixel_array(path, index=0)
    except Exception as exc:  # decoders raise many types; the message is what matters
        ts = "unknown transfer syntax"
        try:
            ts = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
        except Exception:  # the header itself may be the problem
            logger.debug("cannot read transfer syntax of %s", path, exc_info=True)
        return PixelReport(False, f"pixel data cannot be decoded ({ts}): {describe(exc)}"[:1000])
    if pixels.ndim != 2:
        return PixelReport(False, f"pixel array has shape {pixels.shape}; one 2D frame expected")
    return PixelReport(True, f"{pixels.shape[1]}x{pixels.shape[0]} decoded")


def needs_decoder(path: str) -> bool:
    """Whether checking this file means running a decoder (compressed or Deflated data)."""
    try:
        syntax = dcmread(path, stop_before_pixels=True, defer_size=64).file_meta.get(
            "TransferSyntaxUID"
        )
    except Exception:  # an unreadable header goes to the sandbox, which reports why
        return True
    return syntax is None or syntax.is_compressed or syntax.is_deflated


def decoder_memory_limit(settings: Settings) -> int:
    """Address-space cap of the pixel-check process (bytes)."""
    if settings.decoder_memory_limit_mb:
        return settings.decoder_memory_limit_mb * 2**20
    return 1024 * 2**20 + 3 * settings.max_image_bytes


class Grouper:
    """``scores_here``: this node runs a scoring process, which background work yields to
    (a node that only receives, its exams scored by workers elsewhere, hashes whenever idle)."""

    def __init__(
        self, settings: Settings, db: Database, store: InstanceStore, *, scores_here: bool = False
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.scores_here = scores_here
        self._sandbox: Sandbox | None = None

    def run_once(self, now: dt.datetime | None = None) -> int:
        """One pass: pixel checks, exam decisions, then hashing. Returns rows changed."""
        changed = self.check_pending_pixels()
        changed += self.decide_exams(now)
        changed += self.hash_new_files()
        return changed

    def hash_new_files(self, limit: int = 8, idle_seconds: float = 2.0) -> int:
        """SHA-256 of stored files that have none yet: background work, off the receive path
        and off the scoring path. It waits while an image is arriving (it would compete with
        receiving for the CPU) and, on a node that scores (``scores_here``), while an exam is
        being scored or has just become READY (a worker claims it within its poll interval;
        one left unclaimed for ``HASH_WAITS_FOR_READY_SECONDS``, say with no model loaded,
        does not hold it up): it runs at the node's priority, above the lower-priority scoring
        process, and one exam's 109 MB of images and 48 MB of outputs take about 0.2 CPU s to
        hash. Nothing waits for a hash: where a comparison needs one (a re-sent UID) it is
        computed then."""
        with self.db.read() as session:
            latest = session.scalar(
                select(func.max(Exam.last_received_at)).where(
                    Exam.state == ExamState.RECEIVING.value
                )
            )
            if latest is not None and (utcnow() - latest).total_seconds() < idle_seconds:
                return 0
            if self.scores_here and self._scoring_soon(session):
                return 0
            pending = session.execute(
                select(Instance.id, Instance.rel_path)
                .where(Instance.sha256.is_(None))
                .order_by(Instance.id)
                .limit(limit)
            ).all()
        for instance_id, rel_path in pending:
            path = self.store.path(rel_path)
            if not path.is_file():
                logger.error("instance %d: file %s is missing", instance_id, rel_path)
                continue
            digest = file_sha256(path)
            with self.db.session() as session:
                instance = session.get(Instance, instance_id)
                if instance is not None and instance.rel_path == rel_path:
                    instance.sha256 = digest
        return len(pending)

    @staticmethod
    def _scoring_soon(session: Session) -> bool:
        """An exam is being scored, or became READY moments ago (a worker is about to)."""
        fresh = utcnow() - dt.timedelta(seconds=HASH_WAITS_FOR_READY_SECONDS)
        return (
            session.scalar(
                select(Exam.id)
                .where(
                    or_(
                        Exam.state == ExamState.SCORING.value,
                        and_(Exam.state == ExamState.READY.value, Exam.state_changed_at > fresh),
                    )
                )
                .limit(1)
            )
            is not None
        )

    def check_pending_pixels(self, limit: int = 16) -> int:
        """Check new images. Compressed ones are decoded in the decoder sandbox; each check
        counts an attempt (committed before it starts), so an image that kills the decoder,
        or the whole node, is failed with its reason after ``max_pixel_check_attempts``."""
        with self.db.read() as session:
            pending = session.execute(
                select(Instance.id, Instance.rel_path)
                .where(Instance.pixel_check == PixelCheck.PENDING)
                .order_by(Instance.id)
                .limit(limit)
            ).all()
        for instance_id, rel_path in pending:
            attempt = self._count_attempt(instance_id, rel_path)
            if attempt is None:
                continue
            if attempt > self.settings.max_pixel_check_attempts:
                result = PixelReport(
                    False,
                    f"pixel check did not finish in {attempt - 1} attempt(s) (the decoder "
                    "process died each time); not decoded again",
                )
            else:
                checked = self._check(str(self.store.path(rel_path)), attempt)
                if checked is None:
                    continue  # the decoder died: tried again on a later pass
                result = checked
            with self.db.session() as session:
                instance = session.get(Instance, instance_id)
                if instance is None or instance.rel_path != rel_path:
                    continue  # replaced meanwhile: the new file gets its own check
                instance.pixel_check = PixelCheck.OK if result.ok else PixelCheck.FAILED
                instance.pixel_detail = result.detail
                if not result.ok:
                    logger.warning("undecodable %s: %s", instance.sop_instance_uid, result.detail)
        return len(pending)

    def _count_attempt(self, instance_id: int, rel_path: str) -> int | None:
        with self.db.session() as session:
            instance = session.get(Instance, instance_id)
            if instance is None or instance.rel_path != rel_path:
                return None
            instance.pixel_attempts += 1
            return instance.pixel_attempts

    def _check(self, path: str, attempt: int) -> PixelReport | None:
        """The check's report; None when the decoder died and attempts remain."""
        limits = ImageLimits.from_settings(self.settings)
        if not needs_decoder(path):
            return check_pixels(path, limits)
        try:
            return self.sandbox.call(check_pixels, path, limits, timeout=120)
        except SandboxCrash as exc:
            logger.warning("pixel check of %s, attempt %d: %s", Path(path).name, attempt, exc)
            if attempt < self.settings.max_pixel_check_attempts:
                return None
            return PixelReport(
                False, f"pixel check failed after {attempt} attempt(s): {exc}; not decoded again"
            )

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            # beside receiving, below it: the scoring process's niceness (worker_nice)
            self._sandbox = Sandbox(
                "decoder", decoder_memory_limit(self.settings), nice=self.settings.worker_nice
            )
        return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    def decide_exams(self, now: dt.datetime | None = None) -> int:
        now = now or utcnow()
        quiet = min(self.settings.quiet_seconds, self.settings.stable_seconds)
        horizon = now - dt.timedelta(seconds=quiet)
        changed = 0
        with self.db.read() as session:
            ids = session.scalars(
                select(Exam.id).where(
                    Exam.state == ExamState.RECEIVING.value, Exam.last_received_at <= horizon
                )
            ).all()
        for exam_id in ids:
            with self.db.session() as session:
                exam = _lock_exam(session, exam_id)
                if exam is None or exam.state != ExamState.RECEIVING.value:
                    continue
                resolution = repo.resolve_exam(session, exam)
                decision = decide(
                    resolution,
                    last_received_at=exam.last_received_at,
                    now=now,
                    quiet_seconds=self.settings.quiet_seconds,
                    stable_seconds=self.settings.stable_seconds,
                    study_date=exam.study_date,
                    prior_after_days=self.settings.prior_after_days,
                )
                if decision is None:
                    continue
                exam.missing_views = list(decision.missing)
                repo.set_exam_state(session, exam, decision.state, decision.reason, now=now)
                if decision.state is ExamState.HELD:
                    audit.record_in(
                        session,
                        "node",
                        audit.EXAM_HELD,
                        exam.study_uid,
                        reason=resolution.identity_conflict,
                    )
                changed += 1
                logger.info("exam %s -> %s: %s", exam.study_uid, decision.state, decision.reason)
        return changed


def _lock_exam(session: Session, exam_id: int) -> Exam | None:
    query = select(Exam).where(Exam.id == exam_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).first()


class GrouperThread(threading.Thread):
    """Runs ``Grouper.run_once`` every ``grouping_interval`` seconds until stopped."""

    def __init__(self, grouper: Grouper) -> None:
        super().__init__(name="grouper", daemon=True)
        self.grouper = grouper
        self.stopping = threading.Event()
        self.health = LoopHealth("grouper", is_alive=self.is_alive)

    def run(self) -> None:
        interval = self.grouper.settings.grouping_interval
        self.health.started = True
        while not self.stopping.is_set():
            try:
                busy = self.grouper.run_once()
            except Exception as exc:  # an OSError hashing a file must not end grouping
                self.health.failed(exc, f"grouping pass (retrying in {interval:.1f} s)")
                busy = 0
            else:
                self.health.succeeded()
            if not busy:
                self.stopping.wait(interval)
        self.grouper.close()

    def stop(self) -> None:
        self.health.stopped = True
        self.stopping.set()
