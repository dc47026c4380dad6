"""The scoring worker: claims READY exams, runs the ensemble, writes and stores the outputs,
records the result and queues its delivery.

Claiming is a row update inside a transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so
workers on several machines share one database; SQLite: ``BEGIN IMMEDIATE`` serialises, one
worker). A claim older than ``claim_timeout_seconds`` is taken back (a worker that died), and
a restarting worker takes back its own claims at once. An exam that fails ``max_attempts``
times is parked as FAILED with its error. Inference and the writers are pure: no database or
network inside them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydicom import Dataset, dcmread
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mammo_node.config import Settings
from mammo_node.db import repo
from mammo_node.db.models import (
    Destination,
    Exam,
    Instance,
    OutboxItem,
    Result,
    Series,
    utcnow,
)
from mammo_node.db.session import Database
from mammo_node.domain import SLOTS, ExamInference, ExamState, Slot
from mammo_node.errors import MammoNodeError, ModelError, NotFoundError
from mammo_node.filing.ingest import Ingestor
from mammo_node.grouping.rules import Resolution
from mammo_node.limits import ImageLimits, check_before_decode, check_deflate
from mammo_node.observe import metrics
from mammo_node.responses import ScoredExam
from mammo_node.scrub import describe, format_exception
from mammo_node.worker_process import ScoringPriority
from mammo_node.writers import OutputObject, build_outputs
from mammo_node.writers.identity import OutputKind, ReferencedDocument, output_kinds_for
from mammo_node.writers.part10 import write_part10

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    """What the worker needs from a model (mammo_node.ml.inference.EnsembleScorer); one with
    ``score_exams`` (several exams, an outcome each) is given batches."""

    def score_exam(self, datasets: Mapping[Slot, Dataset], study_uid: str) -> ExamInference: ...


def score_many(
    scorer: Scorer, exams: list[tuple[Mapping[Slot, Dataset], str]]
) -> list[ExamInference | Exception]:
    """Each exam's inference or the exception that stopped it, batched when the scorer can."""
    batched = getattr(scorer, "score_exams", None)
    if batched is not None:
        return list(batched(exams))
    outcomes: list[ExamInference | Exception] = []
    for datasets, study_uid in exams:
        try:
            outcomes.append(scorer.score_exam(datasets, study_uid))
        except Exception as exc:  # recorded on its exam by the caller
            outcomes.append(exc)
    return outcomes


@dataclass(frozen=True)
class Claim:
    exam_id: int
    study_uid: str
    revision: int
    attempts: int
    slots: dict[Slot, str]  # slot -> SOP Instance UID
    paths: dict[Slot, str]  # slot -> path in the store
    selection: dict[str, Any]  # why these images: rules, notes, missing breasts


def worker_id_prefix(settings: Settings) -> str:
    return f"{socket.gethostname()}/{settings.ae_title}/worker/"


def default_worker_id(settings: Settings) -> str:
    """Host + process: two workers on one host never share an id (nor release each other's
    claims); a dead process's claims are found by its pid (``release_dead_claims``)."""
    return f"{worker_id_prefix(settings)}{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie (ended, not yet reaped by its new parent) has
    ended, although a signal to it still succeeds."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc: the signal's answer is all there is
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


def release_dead_claims(
    db: Database, settings: Settings, why: str = "", worker_id: str | None = None
) -> int:
    """Claims held by worker processes of this host (and AE) that no longer run are taken
    back at once, instead of after ``claim_timeout_seconds``: the exam goes back to READY, or
    is parked FAILED when it has used its ``max_attempts`` (whatever killed the worker).
    ``worker_id``: the claims of that (stable) worker name, whose process the caller knows
    has ended."""
    prefix = worker_id_prefix(settings)
    released = 0
    with db.session() as session:
        held = Exam.claimed_by == worker_id if worker_id else Exam.claimed_by.startswith(prefix)
        exams = session.scalars(
            select(Exam).where(Exam.state == ExamState.SCORING.value, held)
        ).all()
        for exam in exams:
            if not worker_id:
                pid_text = exam.claimed_by[len(prefix) :]
                if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                    continue
            message = why or "the scoring process ended while scoring it"
            exam.last_error = message
            exam.claimed_by = ""
            if exam.attempts >= settings.max_attempts:
                repo.set_exam_state(
                    session,
                    exam,
                    ExamState.FAILED,
                    f"parked after {exam.attempts} failed attempts: {message}"[:2000],
                )
            else:
                repo.set_exam_state(
                    session,
                    exam,
                    ExamState.READY,
                    f"claim released: {message} (attempt {exam.attempts} of "
                    f"{settings.max_attempts})"[:2000],
                )
            released += 1
    return released


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        ingestor: Ingestor,
        scorer: Callable[[], Scorer],
        *,
        worker_id: str | None = None,
        on_result: Callable[[], None] | None = None,
        pace: Callable[[], int] | None = None,
    ) -> None:
        """``on_result`` is called after a result and its deliveries are committed; ``pace``
        between the stages of an exam (the scoring process sets its threads there and says how
        many the next stage may use)."""
        self.on_result = on_result
        self.pace = pace
        self.settings = settings
        self.db = db
        self.ingestor = ingestor
        self.store = ingestor.store
        self._scorer_factory = scorer
        self._scorer: Scorer | None = None
        self.worker_id = worker_id or default_worker_id(settings)

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = self._scorer_factory()
        return self._scorer

    # --- claiming ----------------------------------------------------------------------
    def release_own_claims(self) -> int:
        """After a restart: exams this worker held while it died are claimable again."""
        with self.db.session() as session:
            exams = session.scalars(
                select(Exam).where(
                    Exam.state == ExamState.SCORING.value, Exam.claimed_by == self.worker_id
                )
            ).all()
            for exam in exams:
                repo.set_exam_state(
                    session, exam, ExamState.READY, "claim released: the worker restarted"
                )
                exam.claimed_by = ""
            return len(exams)

    def park_exhausted(self, session: Session, stale: dt.datetime) -> int:
        """Exams that used their attempts without a recorded end (the process scoring them
        died: OOM, a decoder crash, SIGKILL) are parked FAILED here, at claim time."""
        query = select(Exam).where(
            Exam.attempts >= self.settings.max_attempts,
            or_(
                Exam.state == ExamState.READY.value,
                (Exam.state == ExamState.SCORING.value) & (Exam.claimed_at < stale),
            ),
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        exams = session.scalars(query).all()
        for exam in exams:
            last = (exam.last_error or "the worker died while scoring it").splitlines()[0]
            repo.set_exam_state(
                session,
                exam,
                ExamState.FAILED,
                f"parked after {exam.attempts} failed attempts: {last}"[:2000],
            )
            exam.claimed_by = ""
            logger.warning("exam %s parked after %d attempts", exam.study_uid, exam.attempts)
        return len(exams)

    def claim(self, now: dt.datetime | None = None) -> Claim | None:
        now = now or utcnow()
        stale = now - dt.timedelta(seconds=self.settings.claim_timeout_seconds)
        with self.db.session() as session:
            self.park_exhausted(session, stale)
            query = (
                select(Exam)
                .where(
                    Exam.attempts < self.settings.max_attempts,
                    or_(
                        Exam.state == ExamState.READY.value,
                        (Exam.state == ExamState.SCORING.value) & (Exam.claimed_at < stale),
                    ),
                )
                .order_by(Exam.state_changed_at, Exam.id)
                .limit(1)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            exam = session.scalars(query).first()
            if exam is None:
                return None
            resolution = repo.resolve_exam(session, exam)
            slots = resolution.scored_slots()
            rows = session.scalars(
                select(Instance).where(Instance.sop_instance_uid.in_(list(slots.values())))
            ).all()
            by_uid = {row.sop_instance_uid: row.rel_path for row in rows}
            why = "claimed" if exam.state == ExamState.READY.value else "stale claim taken back"
            repo.set_exam_state(session, exam, ExamState.SCORING, f"{why} by {self.worker_id}")
            exam.claimed_by = self.worker_id
            exam.claimed_at = now
            exam.attempts += 1
            return Claim(
                exam.id,
                exam.study_uid,
                exam.revision,
                exam.attempts,
                slots,
                {slot: by_uid[uid] for slot, uid in slots.items()},
                selection_record(resolution),
            )

    # --- a batch of exams --------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Exams claimed and scored together (``scoring_batch_size``; automatic: 4 on CUDA,
        1 elsewhere)."""
        if self.settings.scoring_batch_size:
            return self.settings.scoring_batch_size
        device = str(getattr(self.scorer, "device", "cpu"))
        return 4 if device.startswith("cuda") else 1

    def run_once(self) -> bool:
        """Claim and score up to ``batch_size`` exams. Returns whether there was one."""
        claims: list[Claim] = []
        while len(claims) < self.batch_size and (claim := self.claim()) is not None:
            claims.append(claim)
        if not claims:
            return False
        self.score_batch(claims)
        return True

    def score(self, claim: Claim) -> int | None:
        """Score a claimed exam; returns the Result id (None when the exam moved on)."""
        started = time.perf_counter()
        sources, read_seconds = self._read_sources(claim)
        self._pace()
        inference = self.scorer.score_exam(sources, claim.study_uid)
        return self._finish(claim, sources, inference, read_seconds, started)

    def score_batch(self, claims: list[Claim]) -> list[int | None]:
        """Score claimed exams in one model batch. Each exam keeps its own result, attempts
        and failure: one that cannot be read, scored or written fails alone (recorded on it,
        retried or parked by its own attempts), the others go on."""
        started = time.perf_counter()
        ready: list[tuple[Claim, dict[Slot, Dataset], float]] = []
        for claim in claims:
            try:
                sources, read_seconds = self._read_sources(claim)
            except Exception as exc:  # any failure is recorded on the exam, never lost
                self._failed(claim, exc)
                continue
            ready.append((claim, sources, read_seconds))
        self._pace()  # threads for the model pass, as associations are open or not
        try:
            outcomes = score_many(self.scorer, [(src, c.study_uid) for c, src, _ in ready])
        except Exception as exc:  # the scorer itself broke: every exam of the batch failed
            outcomes = [exc] * len(ready)
        results: list[int | None] = []
        for (claim, sources, read_seconds), outcome in zip(ready, outcomes, strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                result_id = self._finish(claim, sources, outcome, read_seconds, started)
            except Exception as exc:
                self._failed(claim, exc)
                continue
            results.append(result_id)
        return results

    def _failed(self, claim: Claim, exc: BaseException) -> None:
        logger.error(
            "scoring exam %s failed (attempt %d)",
            claim.study_uid,
            claim.attempts,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        self._record_failure(claim, exc)

    def _read_sources(self, claim: Claim) -> tuple[dict[Slot, Dataset], float]:
        """The claim's images, every limit checked on the header before any pixel is read."""
        if not claim.slots:
            raise ModelError(
                f"exam {claim.study_uid} has no breast with both views "
                f"(missing: {', '.join(claim.selection.get('missing_views', [])) or '-'})"
            )
        t0 = time.perf_counter()
        limits = ImageLimits.from_settings(self.settings)
        for path in claim.paths.values():  # every limit on the header, before any pixel
            header = self.store.path(path)
            check_deflate(header, limits)
            check_before_decode(dcmread(header, defer_size=1024), limits, path=header)
        sources: dict[Slot, Dataset] = {
            slot: dcmread(self.store.path(path)) for slot, path in claim.paths.items()
        }
        return sources, time.perf_counter() - t0

    def _finish(
        self,
        claim: Claim,
        sources: dict[Slot, Dataset],
        inference: ExamInference,
        read_seconds: float,
        started: float,
    ) -> int | None:
        """Writers, store, record: the result of one scored exam."""
        previous = self._previous_result(claim.exam_id)
        threads = self._pace()
        t1 = time.perf_counter()
        outputs = self._build_outputs(sources, inference, claim, previous, threads)
        writers_seconds = time.perf_counter() - t1
        scanner = _scanner(sources)
        sources.clear()
        t2 = time.perf_counter()
        stored = self._store_outputs(outputs)
        store_seconds = time.perf_counter() - t2
        timings = dict(inference.timings)
        timings.update(
            read=read_seconds,
            writers=writers_seconds,
            store=store_seconds,
            worker_total=time.perf_counter() - started,
        )
        result_id = self._record_result(
            claim, inference, outputs, stored, previous, timings, scanner
        )
        if result_id is not None and self.on_result is not None:
            self.on_result()
        return result_id

    def warm_up(self) -> float:
        """One synthetic exam (``batch_size`` copies) through the model and the writers before
        the first claim: CUDA context, kernels and the writers' DICOM dictionaries are loaded
        then, not while a real exam waits. Returns the seconds it took."""
        t0 = time.perf_counter()
        exam = warm_up_exam()
        batch = [(exam, str(exam[SLOTS[0]].StudyInstanceUID))] * self.batch_size
        outcomes = score_many(self.scorer, batch)
        for outcome in outcomes[:1]:
            if isinstance(outcome, Exception):
                raise outcome
            build_outputs(
                exam,
                outcome,
                revision=0,
                station_name=self.settings.ae_title,
                sc_max_pixels=self.settings.sc_max_pixels,
            )
        seconds = time.perf_counter() - t0
        logger.info("worker warmed up in %.2f s (batch of %d)", seconds, len(batch))
        return seconds

    def _pace(self) -> int:
        """The threads the exam's next stage may use: the scoring process's governor sets and
        says them (fewer while anything is being received); in process (tests, benchmarks)
        the scoring processes' own rule with nothing being received."""
        if self.pace is not None:
            return max(1, self.pace())
        return ScoringPriority.from_settings(self.settings).threads

    def _previous_result(self, exam_id: int) -> tuple[int, list[ReferencedDocument]] | None:
        """The latest result of this exam and its SRs (they become Predecessor Documents)."""
        with self.db.read() as session:
            result = session.scalars(
                select(Result).where(Result.exam_fk == exam_id).order_by(Result.id.desc())
            ).first()
            if result is None:
                return None
            rows = session.execute(
                select(Instance, Series.series_uid, Exam.study_uid)
                .join(Series, Instance.series_fk == Series.id)
                .join(Exam, Instance.exam_fk == Exam.id)
                .where(
                    Instance.result_fk == result.id,
                    Instance.output_kind.in_([OutputKind.SR.value, OutputKind.SR_VIEW.value]),
                )
            ).all()
            return result.id, [
                ReferencedDocument(
                    study_uid,
                    series_uid,
                    row.sop_instance_uid,
                    row.sop_class_uid,
                    Slot.parse(row.slot) if row.slot else None,
                )
                for row, series_uid, study_uid in rows
            ]

    def _build_outputs(
        self,
        sources: dict[Slot, Dataset],
        inference: ExamInference,
        claim: Claim,
        previous: tuple[int, list[ReferencedDocument]] | None,
        threads: int,
    ) -> list[OutputObject]:
        return build_outputs(
            sources,
            inference,
            revision=claim.revision,
            previous_sr=previous[1] if previous else (),
            station_name=self.settings.ae_title,
            withdrawn=self._withdrawable_outputs(previous[0]) if previous else (),
            cad_operating_points=self._cad_operating_points(inference),
            sc_max_pixels=self.settings.sc_max_pixels,
            threads=threads,
        )

    def _cad_operating_points(self, inference: ExamInference) -> list[str | None]:
        """The operating points CAD destinations chose (None: the bundle's first). A name the
        bundle does not have falls back to its first point: a typo must not stop scoring."""
        known = {p.name for p in inference.bundle.operating_points}
        with self.db.read() as session:
            rows = session.scalars(select(Destination).where(Destination.enabled)).all()
            chosen: list[str | None] = []
            for d in rows:
                if "cad_sr" not in output_kinds_for(d.outputs):
                    continue
                if d.cad_operating_point and d.cad_operating_point not in known:
                    logger.warning(
                        "destination %s: operating point %r is not in bundle %s; using its first",
                        d.name,
                        d.cad_operating_point,
                        inference.bundle.name,
                    )
                chosen.append(d.cad_operating_point if d.cad_operating_point in known else None)
        return list(dict.fromkeys(chosen)) or [None]

    def _withdrawable_outputs(self, result_id: int) -> list[ReferencedDocument]:
        """SC, SEG and GSPS of an earlier result: the new result's rejection note lists them."""
        kinds = [OutputKind.SC.value, OutputKind.SEG.value, OutputKind.GSPS.value]
        with self.db.read() as session:
            rows = session.execute(
                select(Instance, Series.series_uid, Exam.study_uid)
                .join(Series, Instance.series_fk == Series.id)
                .join(Exam, Instance.exam_fk == Exam.id)
                .where(Instance.result_fk == result_id, Instance.output_kind.in_(kinds))
                .order_by(Instance.id)
            ).all()
            return [
                ReferencedDocument(study_uid, series_uid, row.sop_instance_uid, row.sop_class_uid)
                for row, series_uid, study_uid in rows
            ]

    def _store_outputs(self, outputs: list[OutputObject]) -> list[str]:
        return file_outputs(self.ingestor, outputs, calling_ae=self.settings.ae_title)

    def _record_result(
        self,
        claim: Claim,
        inference: ExamInference,
        outputs: list[OutputObject],
        stored: list[str],
        previous: tuple[int, list[ReferencedDocument]] | None,
        timings: dict[str, float],
        scanner: tuple[str, str] = ("", ""),
    ) -> int | None:
        summary = ScoredExam.of(inference).to_json()
        sr_uid = next(o.sop_instance_uid for o in outputs if o.kind is OutputKind.SR)
        with self.db.session() as session:
            exam = session.get(Exam, claim.exam_id, with_for_update=True)
            assert exam is not None
            current = (
                exam.state == ExamState.SCORING.value
                and exam.claimed_by == self.worker_id
                and exam.revision == claim.revision
            )
            result = Result(
                exam_fk=exam.id,
                exam_revision=claim.revision,
                model_name=inference.bundle.name,
                model_version=inference.bundle.version,
                model_is_demo=inference.bundle.is_demo,
                score_kind=inference.bundle.score_kind,
                exam_score=inference.scores.exam_score,
                breast_scores=summary["breast_scores"],
                images=summary["images"],
                verdicts=summary["verdicts"],
                timings=timings,
                worker=self.worker_id,
                device=_device_label(self.scorer),
                sr_sop_instance_uid=sr_uid,
                selection=claim.selection,
                previous_result_fk=previous[0] if previous else None,
                bundle_sha256=inference.bundle.manifest_sha256,
                probability=inference.probability,
                category=inference.category,
                manufacturer=scanner[0],
                manufacturer_model=scanner[1],
            )
            session.add(result)
            session.flush()
            made = {o.sop_instance_uid: o for o in outputs}
            instances = list(
                session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(stored)))
            )
            for row in instances:
                output = made[row.sop_instance_uid]
                row.result_fk = result.id
                row.output_kind = output.kind.value
                row.slot = str(output.slot) if output.slot else None
            if not current:
                logger.info(
                    "exam %s changed while scoring (revision %d -> %d): result kept "
                    "as history, not sent",
                    exam.study_uid,
                    claim.revision,
                    exam.revision,
                )
                return None
            points = inference.bundle.operating_points
            cad_points = {
                o.sop_instance_uid: o.operating_point
                for o in outputs
                if o.kind is OutputKind.CAD_SR
            }
            queued = self._queue_delivery(
                session, exam, instances, cad_points, [p.name for p in points]
            )
            repo.set_exam_state(
                session,
                exam,
                ExamState.SCORED,
                f"scored by {inference.bundle.name} {inference.bundle.version}: exam score "
                f"{inference.scores.exam_score:.3f}{_selection_summary(claim.selection)}; "
                f"{queued} deliveries queued",
            )
            exam.attempts = 0
            exam.claimed_by = ""
            exam.last_error = ""
            logger.info(
                "exam %s scored %.3f in %.1f s",
                exam.study_uid,
                inference.scores.exam_score,
                timings["worker_total"],
            )
            return result.id

    def _queue_delivery(
        self,
        session: Session,
        exam: Exam,
        instances: list[Instance],
        cad_points: dict[str, str | None],
        point_names: list[str],
    ) -> int:
        """Queue each output to the destinations that asked for its kind; a CAD SR only to those
        that chose its operating point."""
        destinations = session.scalars(select(Destination).where(Destination.enabled)).all()
        chosen = [
            d
            for d in destinations
            if d.send_all or (self.settings.return_to_sender and d.ae_title == exam.source_ae)
        ]
        queued = 0
        for destination in chosen:
            wanted = output_kinds_for(destination.outputs)  # e.g. only CAD SR + GSPS
            for instance in instances:
                if instance.output_kind == OutputKind.CAD_SR.value:
                    chosen = destination.cad_operating_point
                    if chosen not in point_names:  # "" or unknown: the bundle's first
                        chosen = point_names[0] if point_names else None
                    if cad_points.get(instance.sop_instance_uid) != chosen:
                        continue
                if instance.output_kind in wanted:
                    session.add(OutboxItem(instance_fk=instance.id, destination_fk=destination.id))
                    queued += 1
        return queued

    def _record_failure(self, claim: Claim, exc: BaseException) -> None:
        metrics.scoring_failed()
        message = describe(exc)  # no values: exam reasons are shown on pages and the API
        try:
            with self.db.session() as session:
                exam = session.get(Exam, claim.exam_id, with_for_update=True)
                if exam is None or exam.state != ExamState.SCORING.value:
                    return
                exam.last_error = message + "\n" + format_exception(exc)[-4000:]
                exam.claimed_by = ""
                if exam.attempts >= self.settings.max_attempts:
                    repo.set_exam_state(
                        session,
                        exam,
                        ExamState.FAILED,
                        f"parked after {exam.attempts} failed attempts: {message}"[:2000],
                    )
                else:
                    repo.set_exam_state(
                        session,
                        exam,
                        ExamState.READY,
                        f"attempt {exam.attempts} failed, will retry: {message}"[:2000],
                    )
        except MammoNodeError:
            logger.exception("could not record the failure of exam %s", claim.study_uid)


def selection_record(resolution: Resolution) -> dict[str, Any]:
    """What a result says about the images it was computed from (stored with the result)."""
    scored = resolution.scored_slots()
    return {
        "slots": {str(slot): uid for slot, uid in scored.items()},
        "rules": {
            uid: resolution.roles[uid].detail for uid in scored.values() if uid in resolution.roles
        },
        "missing_views": [str(slot) for slot in resolution.missing],
        "missing_breasts": [lat.value for lat in resolution.absent_breasts],
        "notes": list(resolution.notes),
        "exam_date": resolution.exam_date,
    }


def _selection_summary(selection: dict[str, Any]) -> str:
    """What the state reason says beside the score: a missing breast, synthesized 2D."""
    parts = []
    missing = selection.get("missing_breasts") or []
    if missing:
        scored = sorted({slot.split("-")[0] for slot in selection.get("slots", {})})
        parts.append(
            f"one breast: {', '.join(scored)} scored, no image of breast {', '.join(missing)}"
        )
    parts.extend(selection.get("notes") or [])
    return "".join(f" ({part})" for part in parts)


def _scanner(sources: Mapping[Slot, Dataset]) -> tuple[str, str]:
    """(Manufacturer, ManufacturerModelName) of the scored images, for monitoring per scanner."""
    for ds in sources.values():
        maker = str(ds.get("Manufacturer", "") or "").strip()[:64]
        model = str(ds.get("ManufacturerModelName", "") or "").strip()[:64]
        if maker or model:
            return maker, model
    return "", ""


def _device_label(scorer: Scorer) -> str:
    device = getattr(scorer, "device", "")
    precision = getattr(scorer, "precision", "")
    return f"{device} {precision}".strip()


def warm_up_exam(rows: int = 384, columns: int = 312) -> dict[Slot, Dataset]:
    """Four For Presentation MG views of a smooth synthetic breast (no patient), 16-bit."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from mammo_node.sop_classes import MG_PRESENTATION

    yy, xx = np.mgrid[0:rows, 0:columns]
    tissue = ((xx / (0.8 * columns)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2) <= 1.0
    stored = np.where(tissue, 1800 + (xx * 7 + yy * 3) % 400, 50).astype(np.uint16)
    study = generate_uid()
    exam: dict[Slot, Dataset] = {}
    for slot in SLOTS:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MG_PRESENTATION
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.PatientID, ds.PatientName, ds.StudyDate = "WARM-UP", "Warm^Up", "20260101"
        ds.Modality, ds.PresentationIntentType = "MG", "FOR PRESENTATION"
        ds.ImageLaterality, ds.ViewPosition = slot.laterality.value, slot.view.value
        right = slot.laterality.value == "R"
        ds.PatientOrientation = ["P", "L"] if right else ["A", "R"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.PixelData = (stored[:, ::-1] if right else stored).tobytes()
        exam[slot] = ds
    return exam


def warm_up(worker: Worker) -> None:
    """``worker.warm_up()`` when ``scoring_warm_up`` says so (unset: on CUDA only; on a CPU
    the first exam costs little more than the others and every start would pay for it); a
    failure is logged, not fatal (real exams then say why)."""
    wanted = worker.settings.scoring_warm_up
    if wanted is None:
        wanted = str(getattr(worker.scorer, "device", "cpu")).startswith("cuda")
    if not wanted:
        return
    try:
        worker.warm_up()
    except Exception:
        logger.exception("the warm-up pass failed; scoring starts cold")


def rescore(db: Database, study_uid: str, reason: str = "rescore requested") -> int:
    """Queue an exam for a new result (its SR will name the previous one). Returns revision."""
    with db.session() as session:
        exam = repo.exam_by_uid(session, study_uid)
        if exam is None:
            raise NotFoundError(f"no exam with StudyInstanceUID {study_uid}")
        exam.revision += 1
        exam.attempts = 0
        exam.claimed_by = ""
        repo.set_exam_state(session, exam, ExamState.READY, reason)
        return exam.revision


def file_outputs(
    ingestor: Ingestor, outputs: Sequence[OutputObject], *, calling_ae: str
) -> list[str]:
    """Write an exam's outputs as Part-10 temp files and file them together as GENERATED
    instances of the study (``Ingestor.ingest_outputs``: durable before one index
    transaction); their SOP Instance UIDs. A failed write leaves no temp file behind."""
    temps: list[Path] = []
    try:
        for obj in outputs:
            temps.append(ingestor.store.temp_path())
            write_part10(obj.dataset, temps[-1])
    except BaseException:
        for temp in temps:
            ingestor.store.discard_temp(temp)
        raise
    return [r.sop_instance_uid for r in ingestor.ingest_outputs(temps, calling_ae=calling_ae)]
