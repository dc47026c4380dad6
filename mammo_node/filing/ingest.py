"""One path for every instance that enters the node (C-STORE, STOW-RS, the node's own outputs).

``Ingestor.ingest_file`` takes a Part-10 temp file on the store's filesystem and, before it
returns, has the file fsynced in its final place and its row committed: only then may a
C-STORE response or STOW-RS answer say success (``ingest_outputs`` files the node's own
outputs of one exam together: every file in place, then one transaction). It parses the
header (never the pixels), classifies the object for grouping and re-opens an exam that an
image or a rejection note arrives late for (a dose report or presentation state arriving
late changes no result).

Identity: a patient row links studies by (IssuerOfPatientID, PatientID) and is never shared
on an empty PatientID; each exam keeps its own patient attributes as first received.
Same UID, other bytes: ``Settings.overwrite_policy`` decides; what it does not allow is
kept aside as an ``InstanceConflict`` (listed on the exam, audited) and refused with 0x0111.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammo_node.config import Settings
from mammo_node.db import repo
from mammo_node.db.models import Exam, Instance, InstanceConflict, fold_name, utcnow
from mammo_node.db.session import Database
from mammo_node.domain import (
    ExamState,
    IngestOutcome,
    ObjectKind,
    Origin,
    OverwritePolicy,
    PixelCheck,
)
from mammo_node.errors import DatabaseError, InvalidInstanceError, StorageError
from mammo_node.filing.storage import InstanceStore, StoredFile, file_sha256, validate_uid
from mammo_node.grouping.rules import classify, object_kind, selection_facts
from mammo_node.limits import ImageLimits, ImageTooLargeError, check_deflate
from mammo_node.observe import audit, metrics
from mammo_node.scrub import describe
from mammo_node.status import Status

logger = logging.getLogger(__name__)
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class IngestResult:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    outcome: IngestOutcome
    reopened: bool = False


#: Object kinds whose arrival can change which image fills a slot.
_SELECTION_KINDS = {ObjectKind.IMAGE.value, ObjectKind.REJECTION_NOTE.value}


def read_header(path: Path, limits: ImageLimits | None = None) -> Dataset:
    """Parse a Part-10 file's header; large values (pixel data) stay on disk, deferred.

    pydicom reads short values silently; a value that runs past the end of the file is a
    truncated dataset and is refused here. A Deflated data set is first inflated as a stream
    up to ``limits.max_inflated_bytes`` (pydicom would inflate all of it in memory).
    """
    try:
        check_deflate(path, limits or ImageLimits())
    except ImageTooLargeError as exc:
        raise InvalidInstanceError(
            str(exc), status=Status.DATA_SET_TOO_LARGE, http_status=413
        ) from exc
    try:
        ds = dcmread(path, defer_size=4096, force=False)
        size = path.stat().st_size
        for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset would load deferred values
            element = ds.get_item(tag, keep_deferred=True)
            if not isinstance(element, RawDataElement) or element.length in (0, _UNDEFINED):
                continue
            present = size - element.value_tell if element.value is None else len(element.value)
            if present < element.length:
                raise InvalidInstanceError(
                    f"dataset truncated: {element.tag} declares {element.length} bytes, "
                    f"{max(present, 0)} present",
                    status=Status.CANNOT_DECODE_DATA_SET,
                )
    except InvalidInstanceError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed input
        raise InvalidInstanceError(
            f"cannot parse the dataset ({describe(exc)})",
            status=Status.CANNOT_DECODE_DATA_SET,
        ) from exc
    return ds


def _str(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class HeaderFacts:
    """Everything the index stores about one dataset, read before the file is stored."""

    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient: dict[str, str]
    study: dict[str, str]
    exam_patient: dict[str, str]
    series: dict[str, Any]
    instance: dict[str, Any]


def read_facts(ds: Dataset) -> HeaderFacts:
    """UIDs (validated), patient / study / series attributes and the grouping facts."""
    sop_class = validate_uid(ds.get("SOPClassUID"), "SOPClassUID")
    sop_uid = validate_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
    study_uid = validate_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
    series_uid = validate_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
    try:
        facts = classify(ds)
        kind = object_kind(ds)
        intent = (
            "FOR PROCESSING"
            if facts.for_processing
            else (_str(ds, "PresentationIntentType", 32).upper() or "FOR PRESENTATION")
        )
        return HeaderFacts(
            sop_class=sop_class,
            sop_uid=sop_uid,
            study_uid=study_uid,
            series_uid=series_uid,
            transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
            patient={
                "patient_id": _str(ds, "PatientID", 64),
                "issuer": _str(ds, "IssuerOfPatientID", 64),
                "name": _str(ds, "PatientName", 324),
                "birth_date": _str(ds, "PatientBirthDate", 8),
                "sex": _str(ds, "PatientSex", 16),
            },
            exam_patient={
                "patient_name": _str(ds, "PatientName", 324),
                "patient_birth_date": _str(ds, "PatientBirthDate", 8),
                "patient_sex": _str(ds, "PatientSex", 16),
                "patient_age": _str(ds, "PatientAge", 4),
                "patient_name_folded": fold_name(_str(ds, "PatientName", 324)),
            },
            study={
                "accession_number": _str(ds, "AccessionNumber", 16),
                "study_date": _str(ds, "StudyDate", 8),
                "study_time": _str(ds, "StudyTime", 32),
                "study_description": _str(ds, "StudyDescription", 64),
                "study_id": _str(ds, "StudyID", 16),
                "referring_physician_name": _str(ds, "ReferringPhysicianName", 324),
                "timezone_offset": _str(ds, "TimezoneOffsetFromUTC", 16),
            },
            series={
                "modality": _str(ds, "Modality", 16),
                "series_number": _int(ds, "SeriesNumber"),
                "series_description": _str(ds, "SeriesDescription", 64),
                "pps_start_date": _str(ds, "PerformedProcedureStepStartDate", 8),
                "pps_start_time": _str(ds, "PerformedProcedureStepStartTime", 32),
            },
            instance={
                "modality": _str(ds, "Modality", 16),
                "instance_number": _int(ds, "InstanceNumber"),
                "rows": _int(ds, "Rows"),
                "columns": _int(ds, "Columns"),
                "bits_allocated": _int(ds, "BitsAllocated"),
                "number_of_frames": _int(ds, "NumberOfFrames"),
                "patient_orientation": "\\".join(
                    str(v) for v in (ds.get("PatientOrientation") or [])
                )[:32],
                "photometric": _str(ds, "PhotometricInterpretation", 16),
                "presentation_intent": intent,
                "image_type": "\\".join(str(v) for v in ds.get("ImageType", []))[:128],
                "laterality": facts.laterality.value if facts.laterality else None,
                "laterality_source": facts.laterality_source,
                "view": facts.view[:16] if facts.view else None,
                "view_source": facts.view_source,
                "slot": str(facts.slot) if facts.slot else None,
                "rule": facts.rule.value if facts.rule else None,
                "rule_detail": facts.rule_detail,
                "kind": kind.value,
                "facts": selection_facts(ds),
            },
        )
    except Exception as exc:  # a malformed value anywhere in the header
        raise InvalidInstanceError(
            f"cannot read the dataset's attributes ({describe(exc)})",
            status=Status.CANNOT_DECODE_DATA_SET,
        ) from exc


class Ingestor:
    """Stores and indexes instances. Thread-safe: one per process, shared by all handlers."""

    def __init__(self, settings: Settings, db: Database, store: InstanceStore) -> None:
        self.settings = settings
        self.db = db
        self.store = store

    def check_space(self) -> None:
        free_mb = self.store.free_bytes() / 2**20
        if free_mb < self.settings.min_free_disk_mb:
            raise StorageError(
                f"only {free_mb:.0f} MB free in {self.store.root}, below min_free_disk_mb="
                f"{self.settings.min_free_disk_mb}"
            )

    def ingest_file(
        self,
        temp: Path,
        *,
        source: str,
        calling_ae: str = "",
        peer_host: str = "",
        origin: Origin = Origin.RECEIVED,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
    ) -> IngestResult:
        """Store ``temp`` (consumed: moved into the store or deleted) and index it.

        The file is not hashed here unless an instance with the same UID exists (is it the
        same bytes?); the grouping service hashes new files off the receive path.
        """
        try:
            result = self._ingest(
                temp,
                source,
                calling_ae,
                peer_host,
                origin,
                expected_sop_class,
                expected_sop_instance,
            )
        except InvalidInstanceError:
            metrics.instance_rejected(source, "invalid")
            raise
        except StorageError:
            metrics.instance_rejected(source, "no_space")
            raise
        except Exception:
            metrics.instance_rejected(source, "error")
            raise
        metrics.instance_received(source, result.outcome)
        return result

    def ingest_outputs(self, temps: Sequence[Path], *, calling_ae: str) -> list[IngestResult]:
        """File the node's own outputs of one exam (``temps``, consumed) together, as
        GENERATED instances: each file fsynced and moved into place, each folder fsynced once,
        then one transaction indexes them all (``ingest_file`` takes all these steps per file,
        as a C-STORE needs). Nothing is indexed unless every file is on disk; a failure
        leaves no file of the batch behind. A UID the node already holds (a rerun) is filed
        by ``ingest_file``'s own checks, one at a time."""
        source = "node"
        try:
            limits = ImageLimits.from_settings(self.settings)
            facts = [read_facts(read_header(temp, limits)) for temp in temps]
            uids = [f.sop_uid for f in facts]
            one_by_one = len(set(uids)) < len(uids) or self._held(uids)
        except BaseException as exc:
            self._drop_batch(temps, [], exc, rejected=len(temps))
            raise
        if one_by_one:
            return [
                self.ingest_file(t, source=source, calling_ae=calling_ae, origin=Origin.GENERATED)
                for t in temps
            ]
        arrival = Arrival(source, calling_ae[:16], "", Origin.GENERATED)
        placed = [self.store.relative_path(f.study_uid, f.series_uid, f.sop_uid) for f in facts]
        indexed: set[str] = set()
        try:
            stored = self.store.commit_many(list(zip(temps, placed, strict=True)))
            try:
                now = utcnow()
                with self.db.session() as session:
                    filed = [
                        self._index_in(session, f, file, arrival, None, now)
                        for f, file in zip(facts, stored, strict=True)
                    ]
            except (_RaceConflict, DatabaseError) as exc:
                if isinstance(exc, DatabaseError) and not isinstance(exc.__cause__, IntegrityError):
                    raise
                logger.info("concurrent insert among an exam's outputs; filing them one by one")
                results = []
                for f, file in zip(facts, stored, strict=True):
                    results.append(self._index_retrying(f, file, arrival, None))
                    indexed.add(file.rel_path)  # its row points at it: it stays
            else:
                results = [
                    self._after_commit(f, file, arrival, done)
                    for f, file, done in zip(facts, stored, filed, strict=True)
                ]
        except BaseException as exc:
            unindexed = [p for p in placed if p not in indexed]
            self._drop_batch(temps, unindexed, exc, rejected=len(unindexed))
            raise
        for result in results:
            metrics.instance_received(source, result.outcome)
        return results

    def _drop_batch(
        self, temps: Sequence[Path], placed: Sequence[str], exc: BaseException, *, rejected: int
    ) -> None:
        """A batch that failed: its temp files and the files moved into place unindexed go."""
        for temp in temps:
            self.store.discard_temp(temp)
        for rel_path in placed:
            try:
                self.store.remove(rel_path)
            except StorageError:
                logger.exception("could not delete the unindexed file %s", rel_path)
        reason = "invalid" if isinstance(exc, InvalidInstanceError) else "error"
        if isinstance(exc, StorageError):
            reason = "no_space"
        for _ in range(rejected):
            metrics.instance_rejected("node", reason)

    def _held(self, sop_uids: Sequence[str]) -> bool:
        """Does the index hold any of these UIDs already?"""
        with self.db.read() as session:
            found = session.scalars(
                select(Instance.id).where(Instance.sop_instance_uid.in_(sop_uids)).limit(1)
            ).first()
        return found is not None

    def _ingest(
        self,
        temp: Path,
        source: str,
        calling_ae: str,
        peer_host: str,
        origin: Origin,
        expected_sop_class: str | None,
        expected_sop_instance: str | None,
    ) -> IngestResult:
        try:
            facts = read_facts(read_header(temp, ImageLimits.from_settings(self.settings)))
            if expected_sop_class and expected_sop_class != facts.sop_class:
                raise InvalidInstanceError(
                    f"SOPClassUID {facts.sop_class} in the dataset differs from the request's "
                    f"{expected_sop_class}",
                    status=Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                )
            if expected_sop_instance and expected_sop_instance != facts.sop_uid:
                raise InvalidInstanceError(
                    f"SOPInstanceUID {facts.sop_uid} in the dataset differs from the request's "
                    f"{expected_sop_instance}",
                    status=Status.SOP_INSTANCE_MISMATCH,
                )
            sha256: str | None = None
            arrival = Arrival(source, calling_ae[:16], peer_host[:255], origin)
            previous = self._stored_version(facts.sop_uid)
            if previous is not None:  # the same UID again: same bytes, or a replacement?
                sha256 = file_sha256(temp)
                if sha256 == previous.sha256:
                    self.store.discard_temp(temp)
                    logger.info(
                        "duplicate %s (same bytes) from %s", facts.sop_uid, calling_ae or "-"
                    )
                    return previous.result
                if not self._may_replace(previous, arrival):
                    self._keep_aside(temp, facts, arrival, sha256, previous)
            rel_path = self.store.relative_path(facts.study_uid, facts.series_uid, facts.sop_uid)
            stored = self.store.commit(temp, rel_path)
        except BaseException:
            self.store.discard_temp(temp)
            raise
        return self._index_retrying(facts, stored, arrival, sha256)

    def _index_retrying(
        self, facts: HeaderFacts, stored: StoredFile, arrival: Arrival, sha256: str | None
    ) -> IngestResult:
        """``_index`` for a file in place, again after a concurrent insert of the same UID."""
        for attempt in range(3):
            try:
                return self._index(facts, stored, arrival, sha256)
            except _RaceConflict as race:
                digest = sha256 or file_sha256(self.store.path(stored.rel_path))
                self._keep_aside(
                    self.store.path(stored.rel_path), facts, arrival, digest, race.held
                )
            except DatabaseError as exc:
                if not isinstance(exc.__cause__, IntegrityError) or attempt == 2:
                    raise
                logger.info("concurrent insert of %s; retrying", facts.sop_uid)
        raise AssertionError("unreachable")

    def _stored_version(self, sop_uid: str) -> StoredVersion | None:
        """The instance already held under this UID, with its hash (computed if not yet)."""
        with self.db.read() as session:
            row = session.scalars(
                select(Instance).where(Instance.sop_instance_uid == sop_uid)
            ).first()
            if row is None:
                return None
            path = self.store.path(row.rel_path)
            if not path.is_file():
                return None  # the file went missing: store it again
            result = IngestResult(
                sop_uid,
                row.sop_class_uid,
                row.exam.study_uid,
                row.series.series_uid,
                IngestOutcome.DUPLICATE,
            )
            return StoredVersion(
                row.sha256 or file_sha256(path), result, row.calling_ae, row.peer_host, row.origin
            )

    def _may_replace(self, previous: StoredVersion, arrival: Arrival) -> bool:
        """Does the overwrite policy let these other bytes replace the stored instance?"""
        if arrival.origin is Origin.GENERATED or previous.origin == Origin.GENERATED.value:
            return arrival.origin is Origin.GENERATED  # the node's own outputs are its own
        policy = self.settings.overwrite_policy
        if policy is OverwritePolicy.ALWAYS:
            return True
        if policy is OverwritePolicy.SAME_SOURCE:
            return (previous.calling_ae, previous.peer_host) == (
                arrival.calling_ae,
                arrival.peer_host,
            )
        return False

    def _keep_aside(
        self,
        temp: Path,
        facts: HeaderFacts,
        arrival: Arrival,
        sha256: str,
        previous: StoredVersion,
    ) -> None:
        """Store the refused bytes under conflicts/, list them on the exam, audit, refuse."""
        policy = self.settings.overwrite_policy
        rel_path = "conflicts/" + self.store.relative_path(
            facts.study_uid, facts.series_uid, facts.sop_uid
        )
        stored = self.store.commit(temp, rel_path)
        if policy is OverwritePolicy.SAME_SOURCE:
            why = (
                f"stored from {previous.calling_ae or '-'}@{previous.peer_host or '-'}; "
                f"overwrite_policy same-source lets only that source replace it"
            )
        else:
            why = f"overwrite_policy {policy.value} keeps the first acknowledged bytes"
        with self.db.session() as session:
            exam = repo.exam_by_uid(session, previous.result.study_uid)
            assert exam is not None  # the stored instance's exam
            conflict = InstanceConflict(
                exam_fk=exam.id,
                sop_instance_uid=facts.sop_uid,
                sop_class_uid=facts.sop_class,
                rel_path=stored.rel_path,
                sha256=sha256,
                size_bytes=stored.size,
                source=arrival.source,
                calling_ae=arrival.calling_ae,
                peer_host=arrival.peer_host,
                policy=policy.value,
                reason=why,
            )
            session.add(conflict)
            session.flush()
            audit.record_in(
                session,
                arrival.calling_ae or arrival.source,
                audit.INSTANCE_CONFLICT,
                facts.sop_uid,
                study_instance_uid=previous.result.study_uid,
                peer=arrival.peer_host,
                policy=policy.value,
                conflict_id=conflict.id,
                sha256=sha256,
            )
            conflict_id = conflict.id
        logger.warning(
            "conflict: %s from %s@%s has other bytes than the stored instance; kept aside "
            "as conflict %d (%s)",
            facts.sop_uid,
            arrival.calling_ae or "-",
            arrival.peer_host or "-",
            conflict_id,
            why,
        )
        raise InvalidInstanceError(
            f"SOP Instance UID already stored with other bytes; {why} (kept aside as "
            f"conflict {conflict_id})",
            status=Status.DUPLICATE_SOP_INSTANCE,
            http_status=409,
        )

    def _index(
        self, facts: HeaderFacts, stored: StoredFile, arrival: Arrival, sha256: str | None
    ) -> IngestResult:
        with self.db.session() as session:
            filed = self._index_in(session, facts, stored, arrival, sha256, utcnow())
        return self._after_commit(facts, stored, arrival, filed)

    def _index_in(
        self,
        session: Session,
        facts: HeaderFacts,
        stored: StoredFile,
        arrival: Arrival,
        sha256: str | None,
        now: dt.datetime,
    ) -> _Filed:
        """Index one stored file in ``session`` (not committed here)."""
        old_path: str | None = None
        reopened = False
        exam = repo.exam_by_uid(session, facts.study_uid)
        if exam is None:
            patient = repo.upsert_patient(session, study_uid=facts.study_uid, **facts.patient)
            exam = repo.get_or_create(
                session,
                Exam,
                "study_uid",
                facts.study_uid,
                patient_fk=patient.id,
                state=ExamState.RECEIVING.value,
                first_received_at=now,
                last_received_at=now,
                state_changed_at=now,
                **facts.study,
                **facts.exam_patient,
            )
        series = repo.upsert_series(session, exam, facts.series_uid, **facts.series)
        instance = session.scalars(
            select(Instance).where(Instance.sop_instance_uid == facts.sop_uid).with_for_update()
        ).first()
        outcome = IngestOutcome.STORED
        if instance is None:
            instance = Instance(sop_instance_uid=facts.sop_uid, replaced_count=0)
            session.add(instance)
        elif instance.pruned_at is not None and self._same_bytes(instance, stored, sha256):
            # retention had deleted the file; the same bytes sent again go back on file
            outcome = IngestOutcome.RESTORED
            old_path, instance.rel_path, instance.pruned_at = None, stored.rel_path, None
        elif self._same_bytes(instance, stored, sha256):
            outcome = IngestOutcome.DUPLICATE  # stored by another association meanwhile
        else:
            held = StoredVersion(
                instance.sha256 or "",
                IngestResult(
                    facts.sop_uid,
                    instance.sop_class_uid,
                    exam.study_uid,
                    facts.series_uid,
                    IngestOutcome.DUPLICATE,
                ),
                instance.calling_ae,
                instance.peer_host,
                instance.origin,
            )
            if not self._may_replace(held, arrival):
                raise _RaceConflict(held)  # another association stored it meanwhile
            outcome = IngestOutcome.REPLACED
            old_path = instance.rel_path
            instance.replaced_count += 1
        unchanged = outcome in (IngestOutcome.DUPLICATE, IngestOutcome.RESTORED)
        if not unchanged:
            self._fill(instance, facts, stored, arrival, sha256, now, series.id, exam.id)
        if outcome is IngestOutcome.REPLACED and arrival.origin is Origin.RECEIVED:
            audit.record_in(
                session,
                arrival.calling_ae or arrival.source,
                audit.INSTANCE_REPLACED,
                facts.sop_uid,
                study_instance_uid=facts.study_uid,
                peer=arrival.peer_host,
                policy=self.settings.overwrite_policy.value,
            )
        if arrival.origin is Origin.RECEIVED and not unchanged:
            reopened = _note_arrival(
                session, exam, facts.sop_uid, outcome, now, arrival, facts.instance["kind"]
            )
        return _Filed(outcome, old_path, reopened)

    def _after_commit(
        self, facts: HeaderFacts, stored: StoredFile, arrival: Arrival, filed: _Filed
    ) -> IngestResult:
        """Once the row is committed: delete the file it no longer points at, log, answer."""
        outcome, old_path = filed.outcome, filed.old_path
        for obsolete in (old_path, stored.rel_path if outcome is IngestOutcome.DUPLICATE else None):
            if obsolete:
                try:
                    self.store.remove(obsolete)
                except StorageError:
                    logger.exception("could not delete the obsolete file %s", obsolete)
        logger.info(
            "%s %s (%s) study %s from %s@%s",
            outcome,
            facts.sop_uid,
            facts.sop_class,
            facts.study_uid,
            arrival.calling_ae or "-",
            arrival.peer_host or "-",
        )
        return IngestResult(
            facts.sop_uid,
            facts.sop_class,
            facts.study_uid,
            facts.series_uid,
            outcome,
            filed.reopened,
        )

    def _same_bytes(self, instance: Instance, stored: StoredFile, sha256: str | None) -> bool:
        """Rare path (a race between two senders of one UID): compare the two files."""
        new = sha256 or file_sha256(self.store.path(stored.rel_path))
        old_path = self.store.path(instance.rel_path)
        old = instance.sha256 or (file_sha256(old_path) if old_path.is_file() else None)
        return new == old

    @staticmethod
    def _fill(
        instance: Instance,
        facts: HeaderFacts,
        stored: StoredFile,
        arrival: Arrival,
        sha256: str | None,
        now: dt.datetime,
        series_fk: int,
        exam_fk: int,
    ) -> None:
        for name, value in facts.instance.items():
            setattr(instance, name, value)
        needs_check = (
            arrival.origin is Origin.RECEIVED
            and facts.instance["rule"] is None
            and facts.instance["slot"] is not None
        )
        instance.sop_class_uid = facts.sop_class
        instance.series_fk = series_fk
        instance.exam_fk = exam_fk
        instance.transfer_syntax_uid = facts.transfer_syntax
        instance.rel_path = stored.rel_path
        instance.sha256 = sha256
        instance.size_bytes = stored.size
        instance.received_at = now
        instance.origin = arrival.origin.value
        instance.source = arrival.source
        instance.calling_ae = arrival.calling_ae
        instance.peer_host = arrival.peer_host
        instance.pixel_check = PixelCheck.PENDING if needs_check else PixelCheck.SKIPPED
        instance.pixel_detail = ""


class _RaceConflict(Exception):
    """Inside ``_index``: the UID was stored by another association meanwhile, with other
    bytes the overwrite policy does not let replace it."""

    def __init__(self, held: StoredVersion) -> None:
        super().__init__(held.result.sop_instance_uid)
        self.held = held


@dataclass(frozen=True)
class StoredVersion:
    sha256: str
    result: IngestResult
    calling_ae: str
    peer_host: str
    origin: str


@dataclass(frozen=True)
class _Filed:
    """What indexing one file did, for the steps after its transaction commits."""

    outcome: IngestOutcome
    old_path: str | None  # a replaced version's file, deleted once the new row is committed
    reopened: bool


@dataclass(frozen=True)
class Arrival:
    source: str  # dimse, stow, node
    calling_ae: str
    peer_host: str
    origin: Origin


def _note_arrival(
    session: Session,
    exam: Exam,
    sop_uid: str,
    outcome: str,
    now: dt.datetime,
    arrival: Arrival,
    kind: str,
) -> bool:
    """Record an object's arrival on its exam; re-open the exam if it had moved on and the
    object can change the selection (an image, a rejection note)."""
    if not exam.source_ae:  # the sender of the study, for return-to-sender
        exam.source_ae = arrival.calling_ae
        exam.source_host = arrival.peer_host
    if kind not in _SELECTION_KINDS:
        if exam.state == ExamState.RECEIVING.value:
            exam.last_received_at = now
        return False
    exam.last_received_at = now
    if outcome is IngestOutcome.REPLACED:
        exam.changed_at = now
        exam.revision += 1
    if exam.state == ExamState.RECEIVING.value:
        return False
    late = "rejection note" if kind == ObjectKind.REJECTION_NOTE.value else "image"
    why = "image replaced" if outcome is IngestOutcome.REPLACED else f"late {late}"
    if outcome is not IngestOutcome.REPLACED:
        exam.revision += 1
    exam.attempts = 0  # attempts count per revision: new images, a fresh set of tries
    repo.set_exam_state(
        session, exam, ExamState.RECEIVING, f"re-opened: {why} {sop_uid} after {exam.state}"
    )
    return True
