"""SQLAlchemy 2 models: patients, exams (studies), series, instances, exam events, associations.

Every state change is a row, so a restart resumes where the node stopped. The file on disk is
the archive; these rows are its index. Derived facts (which image fills which slot, which rule
kept an image out) are computed from the rows by ``mammo_node.grouping.rules``, not stored twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from mammo_node.domain import OutboxState, PixelCheck

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; use timezone-aware UTC")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


UID = String(64)
# PostgreSQL: a btree over a pattern operator class serves both = and LIKE 'prefix%' whatever
# the database's collation (QIDO wildcards); SQLite's GLOB uses a plain (BINARY) index
PATTERN = "varchar_pattern_ops"


def fold_name(name: str) -> str:
    """A person name as QIDO matches it: case-insensitive (PS3.4 C.2.2.2.1), folded once at
    ingest into an indexed column."""
    return name.lower()


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    # PatientID + IssuerOfPatientID joined with a backslash (which neither may contain)
    patient_key: Mapped[str] = mapped_column(String(130), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")

    exams: Mapped[list[Exam]] = relationship(back_populates="patient")

    __table_args__ = (
        Index(
            "ix_patients_patient_id_issuer",
            "patient_id",
            "issuer",
            postgresql_ops={"patient_id": PATTERN},
        ),
    )


class Exam(Base):
    """One study: exam = StudyInstanceUID."""

    __tablename__ = "exams"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    missing_views: Mapped[list[Any]] = mapped_column(default=list)
    # bumped whenever the set of images changes after the exam left RECEIVING, or an image
    # is replaced: a result is only valid for the revision it was computed from
    revision: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    source_ae: Mapped[str] = mapped_column(String(16), default="")
    source_host: Mapped[str] = mapped_column(String(255), default="")
    # the study's own patient attributes as first received (the patient row links studies
    # by (IssuerOfPatientID, PatientID); each exam shows and outputs its own woman)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_age: Mapped[str] = mapped_column(String(4), default="")
    # PatientName as QIDO matches it (fold_name), indexed
    patient_name_folded: Mapped[str] = mapped_column(String(324), default="", server_default="")
    # attributes QIDO returns at the study level, read from the header at ingest; None only on
    # rows filed before revision 0009 whose file was not there to read (QIDO reads the header)
    study_id: Mapped[str | None] = mapped_column(String(16), default=None)
    referring_physician_name: Mapped[str | None] = mapped_column(String(324), default=None)
    timezone_offset: Mapped[str | None] = mapped_column(String(16), default=None)
    # scoring: attempts at the current revision, the worker holding it, the last failure
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str] = mapped_column(String(128), default="")
    claimed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # the latest result's exam score and category (set with each new result), so that the
    # worklist's triage orders walk an index instead of weighing every exam's latest result
    latest_exam_score: Mapped[float | None] = mapped_column(Float, default=None)
    latest_category: Mapped[int | None] = mapped_column(Integer, default=None)
    # retention never prunes a held exam's images (a case under review, a legal hold)
    retention_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    retention_hold_reason: Mapped[str] = mapped_column(Text, default="")

    patient: Mapped[Patient] = relationship(back_populates="exams")
    series: Mapped[list[Series]] = relationship(back_populates="exam")
    instances: Mapped[list[Instance]] = relationship(back_populates="exam")
    conflicts: Mapped[list[InstanceConflict]] = relationship(
        back_populates="exam", order_by="InstanceConflict.id"
    )
    events: Mapped[list[ExamEvent]] = relationship(back_populates="exam", order_by="ExamEvent.id")

    __table_args__ = (
        # QIDO matching (PS3.18 10.6.1.2) and the worklist's default order
        Index("ix_exams_study_date", "study_date"),
        Index(
            "ix_exams_accession_number",
            "accession_number",
            postgresql_ops={"accession_number": PATTERN},
        ),
        Index(
            "ix_exams_patient_name_folded",
            "patient_name_folded",
            postgresql_ops={"patient_name_folded": PATTERN},
        ),
        Index(
            "ix_exams_study_description",
            "study_description",
            postgresql_ops={"study_description": PATTERN},
        ),
        Index("ix_exams_last_received_at", "last_received_at", "id"),
        # the worklist's triage orders (risk, category), all exams or one state
        Index("ix_exams_triage_score", "latest_exam_score", "last_received_at", "id"),
        Index(
            "ix_exams_state_triage_score", "state", "latest_exam_score", "last_received_at", "id"
        ),
        Index(
            "ix_exams_triage_category",
            "latest_category",
            "latest_exam_score",
            "last_received_at",
            "id",
        ),
        Index(
            "ix_exams_state_triage_category",
            "state",
            "latest_category",
            "latest_exam_score",
            "last_received_at",
            "id",
        ),
    )


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, default=None)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    # returned by QIDO at the series level (None: filed before 0009, file not read)
    pps_start_date: Mapped[str | None] = mapped_column(String(8), default=None)
    pps_start_time: Mapped[str | None] = mapped_column(String(32), default=None)

    exam: Mapped[Exam] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")

    # Modality and ModalitiesInStudy matching: series of a modality, then their exams
    __table_args__ = (Index("ix_series_modality_exam", "modality", "exam_fk"),)


class Instance(Base):
    """One stored SOP instance and what its tags say about it."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"), index=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    rel_path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # SHA-256 of the stored file; None until the grouping service hashed it (off the receive
    # path), or computed at once when an instance with the same UID arrives again
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    replaced_count: Mapped[int] = mapped_column(Integer, default=0)
    origin: Mapped[str] = mapped_column(String(16))  # domain.Origin
    source: Mapped[str] = mapped_column(String(16))  # dimse, stow, node
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    peer_host: Mapped[str] = mapped_column(String(255), default="")

    modality: Mapped[str] = mapped_column(String(16), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, default=None)
    rows: Mapped[int | None] = mapped_column(Integer, default=None)
    columns: Mapped[int | None] = mapped_column(Integer, default=None)
    photometric: Mapped[str] = mapped_column(String(16), default="")
    presentation_intent: Mapped[str] = mapped_column(String(32), default="")
    image_type: Mapped[str] = mapped_column(String(128), default="")
    # returned by QIDO at the instance level (None: filed before 0009, file not read)
    bits_allocated: Mapped[int | None] = mapped_column(Integer, default=None)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, default=None)
    # how the exam page hangs the view ("A\\R"; "" absent; None: filed before 0009, not read)
    patient_orientation: Mapped[str | None] = mapped_column(String(32), default=None)

    # what the tags say, and which tag decided (see grouping.classify)
    laterality: Mapped[str | None] = mapped_column(String(1), default=None)
    laterality_source: Mapped[str] = mapped_column(String(64), default="")
    view: Mapped[str | None] = mapped_column(String(16), default=None)
    view_source: Mapped[str] = mapped_column(String(64), default="")
    slot: Mapped[str | None] = mapped_column(String(8), default=None)
    # a rule that keeps this image out of scoring on its own tags (domain.NotScoredReason)
    rule: Mapped[str | None] = mapped_column(String(32), default=None)
    rule_detail: Mapped[str] = mapped_column(Text, default="")
    # what the object is for selection (domain.ObjectKind) and the facts selection weighs
    # against the study's other objects (grouping.rules.selection_facts): acquisition time,
    # synthesized 2D, implant, the patient's identity, what a rejection note withdraws
    kind: Mapped[str] = mapped_column(String(16), default="image")
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pixel decodability (domain.PixelCheck): pending, ok, failed, skipped
    pixel_check: Mapped[str] = mapped_column(String(16), default=PixelCheck.PENDING.value)
    pixel_detail: Mapped[str] = mapped_column(Text, default="")
    # pixel checks started (each counted before the decoder runs; see grouping.service)
    pixel_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # outputs written by the node: which result and what kind (sr, sr_view, sc, seg)
    result_fk: Mapped[int | None] = mapped_column(
        ForeignKey("results.id"), default=None, index=True
    )
    output_kind: Mapped[str] = mapped_column(String(16), default="")
    # set when retention deleted the file: the row (and the exam's result) stay as the record
    pruned_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    exam: Mapped[Exam] = relationship(back_populates="instances")
    series: Mapped[Series] = relationship(back_populates="instances")

    __table_args__ = (
        Index("ix_instances_pixel_pending", "pixel_check", "origin"),
        Index("ix_instances_sha256", "sha256"),  # finds the files not hashed yet (NULL)
        Index("ix_instances_sop_class_uid", "sop_class_uid"),  # QIDO SOPClassUID
    )


class InstanceConflict(Base):
    """Other bytes received under an acknowledged SOP Instance UID that the overwrite policy
    did not let replace the stored instance: kept aside (never deleted), listed on the exam."""

    __tablename__ = "instance_conflicts"

    id: Mapped[int] = mapped_column(primary_key=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    rel_path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    peer_host: Mapped[str] = mapped_column(String(255), default="")
    policy: Mapped[str] = mapped_column(String(16))  # domain.OverwritePolicy in force
    reason: Mapped[str] = mapped_column(Text, default="")

    exam: Mapped[Exam] = relationship(back_populates="conflicts")


class ExamEvent(Base):
    """Append-only history of an exam's state changes and why."""

    __tablename__ = "exam_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    from_state: Mapped[str] = mapped_column(String(16), default="")
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")

    exam: Mapped[Exam] = relationship(back_populates="events")


class Association(Base):
    """Audit of DICOM associations: who connected, whether accepted, what they stored."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    called_ae: Mapped[str] = mapped_column(String(16), default="")
    peer_host: Mapped[str] = mapped_column(String(255), default="")
    peer_port: Mapped[int | None] = mapped_column(Integer, default=None)
    tls: Mapped[bool] = mapped_column(Boolean, default=False)
    accepted: Mapped[bool] = mapped_column(Boolean, default=True)
    reject_reason: Mapped[str] = mapped_column(Text, default="")
    end_reason: Mapped[str] = mapped_column(String(16), default="")  # released, aborted
    stored: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class Result(Base):
    """One scoring of one exam revision by one model bundle."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"), index=True)
    exam_revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    model_is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    score_kind: Mapped[str] = mapped_column(String(32), default="logit_difference")
    exam_score: Mapped[float]
    breast_scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    images: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per SOP Instance UID
    verdicts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    device: Mapped[str] = mapped_column(String(32), default="")
    worker: Mapped[str] = mapped_column(String(128), default="")
    sr_sop_instance_uid: Mapped[str] = mapped_column(UID, default="")
    # which image filled each slot and why, notes (synthesized 2D, implant), missing breasts
    selection: Mapped[dict[str, Any]] = mapped_column(default=dict)
    previous_result_fk: Mapped[int | None] = mapped_column(ForeignKey("results.id"), default=None)
    # sha256 of the bundle's manifest.json (which holds the sha256 of each weights file)
    bundle_sha256: Mapped[str] = mapped_column(String(64), default="")
    # from the bundle's calibration (None for an uncalibrated bundle): probability of screening
    # cancer at the calibration's prevalence, and the 1-10 category radiologists read
    probability: Mapped[float | None] = mapped_column(Float, default=None)
    category: Mapped[int | None] = mapped_column(Integer, default=None)
    # the scanner of the scored images, for monitoring per scanner (never patient data)
    manufacturer: Mapped[str] = mapped_column(String(64), default="")
    manufacturer_model: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (Index("ix_results_exam_revision", "exam_fk", "exam_revision"),)


@event.listens_for(Result, "after_insert")
def _exam_latest_result(_mapper: Any, connection: Connection, target: Result) -> None:
    """A new result is its exam's newest: copy its exam score and category to the exam's
    triage columns (the worklist's risk and category orders), whoever adds the result."""
    exams = Exam.__table__
    connection.execute(
        update(exams)
        .where(exams.c.id == target.exam_fk)
        .values(latest_exam_score=target.exam_score, latest_category=target.category)
    )


class Destination(Base):
    """A DICOM peer results are sent to (a PACS, a workstation)."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    tls: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # True: every result goes here (a PACS). False: only results of exams this AE sent
    # (with the return_to_sender setting), e.g. a modality or a reading workstation
    send_all: Mapped[bool] = mapped_column(Boolean, default=True)
    # which result objects it gets, e.g. "tid1500,sc,seg" or "cad-sr,gsps" (writers.identity)
    outputs: Mapped[str] = mapped_column(
        String(128), default="tid1500,sc,seg", server_default="tid1500,sc,seg"
    )
    # CAD SR marks above this bundle operating point are "Presentation Required"; "" = first
    cad_operating_point: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # an association rejection is a configuration problem: reported once, then paused
    config_error: Mapped[str] = mapped_column(Text, default="")


class OutboxItem(Base):
    """One output instance due at one destination: the durable outbox."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_fk: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    destination_fk: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING.value, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # the exporter process delivering this row now, and until when its lease holds
    leased_by: Mapped[str] = mapped_column(String(128), default="", server_default="")
    leased_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    # a C-STORE went out and no answer came back: the peer may hold the object already, so
    # the next attempt asks it first (C-FIND) instead of sending it a second time
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        UniqueConstraint("instance_fk", "destination_fk", name="uq_outbox_instance_destination"),
    )


class AuditEvent(Base):
    """Append-only audit: who sent what, what was sent where, who looked at which exam."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))  # AE title, token name, user, "node"
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(128), default="")  # a UID, a destination...
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Outcome(Base):
    """What screening later found for an exam (imported by ``mammo-node outcomes import``)."""

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(primary_key=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"), unique=True)
    outcome: Mapped[str] = mapped_column(String(16))  # screening, interval, normal
    cancer_laterality: Mapped[str] = mapped_column(String(1), default="")  # L, R, B or ""
    readers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # reader1_L ... scores
    source: Mapped[str] = mapped_column(String(255), default="")
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelBundleRow(Base):
    """A model bundle installed on the node (``mammo-node models add``) and its role:
    installed, active (scores and sends) or shadow (scores every exam, sends nothing)."""

    __tablename__ = "model_bundles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(1024))
    role: Mapped[str] = mapped_column(String(16), default="installed")
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ShadowResult(Base):
    """A shadow bundle's scoring of an exam the active bundle scored: kept, never sent."""

    __tablename__ = "shadow_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    exam_fk: Mapped[int] = mapped_column(ForeignKey("exams.id"))
    exam_revision: Mapped[int] = mapped_column(Integer)
    active_result_fk: Mapped[int] = mapped_column(ForeignKey("results.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    exam_score: Mapped[float | None]  # None when it failed
    breast_scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    images: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdicts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # why the shadow has no score for this exam (its process died, or scoring raised): the
    # exam is not tried again by that bundle, so one bad exam cannot stall the shadow
    failure: Mapped[str | None] = mapped_column(String(500), default=None)

    __table_args__ = (
        UniqueConstraint(
            "exam_fk", "exam_revision", "bundle_sha256", name="uq_shadow_results_exam_bundle"
        ),
    )
