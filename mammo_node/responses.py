"""The answers the node gives about exams, results and deliveries: one model per answer.

`exams show --json`, `outbox list --json`, the JSON API (``response_model=``) and the pages
render these same objects, so a field means one thing wherever it appears (a result is
``current`` or not, its model ``is_demo`` or not). Each model is built from database rows in
one place, its ``of`` constructor; times are ISO 8601 text as the database gave them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mammo_node.db.models import (
    Destination,
    Exam,
    ExamEvent,
    Instance,
    InstanceConflict,
    OutboxItem,
    Patient,
)
from mammo_node.db.models import Result as ResultRow
from mammo_node.domain import (
    ExamInference,
    ExamState,
    ObjectRole,
    Origin,
    OutboxState,
    ViewInference,
)
from mammo_node.grouping.rules import ObjectDecision
from mammo_node.sop_classes import sop_class_name


def iso(value: dt.datetime | None) -> str | None:
    """A database time as the answers print it (None stays None)."""
    return value.isoformat() if value else None


class Answer(BaseModel):
    """Base of every answer: unknown fields are a programming error, not extra output."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The answer as JSON-ready values, with the field names the README documents."""
        return self.model_dump(mode="json", by_alias=True)


# --- deliveries -------------------------------------------------------------------------------
class Delivery(Answer):
    """One output object on its way to one destination (an outbox row)."""

    id: int
    destination: str
    sop_instance_uid: str
    output: str  # sr, sc, seg
    state: OutboxState
    attempts: int
    last_status: int | None
    last_error: str
    next_attempt_at: str | None
    delivered_at: str | None

    @classmethod
    def of(cls, item: OutboxItem, destination: str, sop_instance_uid: str, output: str) -> Delivery:
        return cls(
            id=item.id,
            destination=destination,
            sop_instance_uid=sop_instance_uid,
            output=output,
            state=OutboxState(item.state),
            attempts=item.attempts,
            last_status=item.last_status,
            last_error=item.last_error,
            next_attempt_at=iso(item.next_attempt_at),
            delivered_at=iso(item.delivered_at),
        )


class DestinationInfo(Answer):
    """A destination, what it is sent and how its outbox stands (`destinations list`)."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool
    send_all: bool
    outputs: list[str]
    cad_operating_point: str | None
    enabled: bool
    config_error: str
    pending: int  # rows waiting (including retries after backoff)
    dead: int  # dead letters: `mammo-node outbox retry`
    in_doubt: int  # sent without an answer: asked (C-FIND) before being sent again

    @classmethod
    def of(cls, d: Destination, pending: int, dead: int, in_doubt: int) -> DestinationInfo:
        return cls(
            name=d.name,
            ae_title=d.ae_title,
            host=d.host,
            port=d.port,
            tls=d.tls,
            send_all=d.send_all,
            outputs=d.outputs.split(","),
            cad_operating_point=d.cad_operating_point or None,
            enabled=d.enabled,
            config_error=d.config_error,
            pending=pending,
            dead=dead,
            in_doubt=in_doubt,
        )


class DestinationDeliveries(Answer):
    """What became of one result at one destination: its outbox rows, summed up."""

    destination: str
    address: str  # AE@host:port
    enabled: bool
    config_error: str
    states: dict[str, int] = Field(default_factory=dict)  # outbox state -> rows
    items: list[Delivery] = Field(default_factory=list)
    attempts: int = 0  # the most any row took
    last_error: str = ""
    delivered_at: str | None = None  # the latest delivery
    summary: str = "pending"  # delivered (all), failed (any dead), pending

    @classmethod
    def of(cls, destination: Destination, deliveries: list[Delivery]) -> DestinationDeliveries:
        entry = cls(
            destination=destination.name,
            address=f"{destination.ae_title}@{destination.host}:{destination.port}",
            enabled=destination.enabled,
            config_error=destination.config_error,
            items=deliveries,
        )
        for d in deliveries:
            entry.states[d.state] = entry.states.get(d.state, 0) + 1
            entry.attempts = max(entry.attempts, d.attempts)
            if d.last_error:
                entry.last_error = d.last_error
            if d.delivered_at and (
                entry.delivered_at is None or d.delivered_at > entry.delivered_at
            ):
                entry.delivered_at = d.delivered_at
        if set(entry.states) == {OutboxState.DELIVERED}:
            entry.summary = "delivered"
        elif OutboxState.DEAD in entry.states:
            entry.summary = "failed"
        return entry


# --- results ----------------------------------------------------------------------------------
class ModelInfo(Answer):
    """The bundle that made a result; ``is_demo`` results are not for clinical use;
    ``bundle_sha256`` is its content hash (the manifest's, which lists every weights file's)."""

    name: str
    version: str
    is_demo: bool
    bundle_sha256: str = ""


class ViewScore(Answer):
    """One image's scores; ``coa`` (x=column, y=row) and ``roi`` (x0, y0, x1, y1, x1/y1
    exclusive) in the stored pixel grid of that image."""

    model_config = ConfigDict(extra="ignore")  # stored JSON may carry more than is shown

    slot: str
    holistic: float
    attention: float
    ensemble: float
    coa: list[float]
    roi: list[int]

    @classmethod
    def of(cls, view: ViewInference) -> ViewScore:
        return cls(
            slot=str(view.slot),
            holistic=view.holistic,
            attention=view.attention,
            ensemble=view.ensemble,
            coa=[view.coa[0], view.coa[1]],
            roi=list(view.roi),
        )


class ModelName(Answer):
    name: str
    version: str


class ScoredExam(Answer):
    """What a result row keeps of the worker's inference (no saliency maps): its
    ``breast_scores``, ``images`` and ``verdicts`` are what the answers above read back."""

    exam_score: float
    breast_scores: dict[str, float]
    images: dict[str, ViewScore]  # SOP Instance UID -> scores
    model: ModelName
    verdicts: dict[str, bool]
    timings: dict[str, float]

    @classmethod
    def of(cls, inference: ExamInference) -> ScoredExam:
        return cls(
            exam_score=inference.scores.exam_score,
            breast_scores={lat.value: s for lat, s in inference.scores.breast_scores.items()},
            images={v.sop_instance_uid: ViewScore.of(v) for v in inference.views.values()},
            model=ModelName(name=inference.bundle.name, version=inference.bundle.version),
            verdicts=dict(inference.verdicts),
            timings=dict(inference.timings),
        )


class OutputRef(Answer):
    """An object the node wrote for a result (SR, SC, SEG) and the view it belongs to."""

    sop_instance_uid: str
    kind: str
    slot: str | None


class Result(Answer):
    """The latest scoring of an exam, as a worklist row shows it.

    ``current`` is False once an image changed the exam after this result (a new one is due).
    """

    id: int
    exam_revision: int
    current: bool
    created_at: str | None
    exam_score: float
    score_kind: str  # logit_difference (uncalibrated) or probability (calibrated, 0..1)
    # from the bundle's calibration, None when it has none: P(screening cancer) 0..1 at the
    # calibration's prevalence, and the 1-10 category (deciles of a screening population)
    probability: float | None = None
    category: int | None = None
    breast_scores: dict[str, float]
    images: dict[str, ViewScore]  # SOP Instance UID -> scores
    verdicts: dict[str, bool]  # operating point -> exam score at or above its threshold
    model: ModelInfo
    device: str
    timings: dict[str, float]
    sr_sop_instance_uid: str
    # how the scored images were chosen (synthesized 2D, one breast...): the selection rules'
    # record, and the breasts not scored because their views were absent
    selection: dict[str, Any] = Field(default_factory=dict)
    missing_breasts: list[str] = Field(default_factory=list)
    previous_result_id: int | None
    seconds_to_result: float  # from the exam's last image to this result

    @classmethod
    def fields_of(cls, result: ResultRow, exam: Exam) -> dict[str, Any]:
        to_result = (result.created_at - exam.last_received_at).total_seconds()
        return {
            "id": result.id,
            "exam_revision": result.exam_revision,
            "current": result.exam_revision == exam.revision,
            "created_at": iso(result.created_at),
            "exam_score": result.exam_score,
            "score_kind": result.score_kind,
            "probability": result.probability,
            "category": result.category,
            "breast_scores": dict(result.breast_scores or {}),
            "images": dict(result.images or {}),
            "verdicts": dict(result.verdicts or {}),
            "model": ModelInfo(
                name=result.model_name,
                version=result.model_version,
                is_demo=result.model_is_demo,
                bundle_sha256=result.bundle_sha256 or "",
            ),
            "device": result.device,
            "timings": dict(result.timings or {}),
            "sr_sop_instance_uid": result.sr_sop_instance_uid,
            "selection": dict(result.selection or {}),
            "missing_breasts": list((result.selection or {}).get("missing_breasts", [])),
            "previous_result_id": result.previous_result_fk,
            "seconds_to_result": max(0.0, to_result),
        }

    @classmethod
    def of(cls, result: ResultRow, exam: Exam) -> Result:
        return cls(**cls.fields_of(result, exam))


class ResultDetail(Result):
    """A result with the objects written for it and where each was sent."""

    outputs: list[OutputRef]
    deliveries: list[Delivery]

    @classmethod
    def with_outputs(
        cls,
        result: ResultRow,
        exam: Exam,
        outputs: list[OutputRef],
        deliveries: list[Delivery],
    ) -> ResultDetail:
        return cls(**cls.fields_of(result, exam), outputs=outputs, deliveries=deliveries)


# --- exams ------------------------------------------------------------------------------------
class PatientInfo(Answer):
    """The exam's own woman, shown only to signed-in users and token holders: identifiers from
    the patient row (matched on issuer + ID), attributes as her study sent them, so a later
    study of another woman under the same ID never renames this one."""

    name: str
    id: str
    issuer: str
    birth_date: str
    sex: str
    age: str = ""

    @classmethod
    def of(cls, patient: Patient, exam: Exam) -> PatientInfo:
        return cls(
            name=exam.patient_name.replace("^", " ").strip(),
            id=patient.patient_id,
            issuer=patient.issuer,
            birth_date=exam.patient_birth_date,
            sex=exam.patient_sex,
            age=exam.patient_age,
        )


class ExamSummary(Answer):
    """An exam as one row of `exams list`: its state and why, what arrived when."""

    study_uid: str
    state: ExamState
    reason: str
    missing_views: list[str]
    revision: int
    images: int  # received images (not the node's own outputs)
    study_date: str
    accession_number: str
    source_ae: str
    first_received_at: str | None
    last_received_at: str | None
    state_changed_at: str | None

    @classmethod
    def fields_of(cls, exam: Exam, images: int) -> dict[str, Any]:
        return {
            "study_uid": exam.study_uid,
            "state": ExamState(exam.state),
            "reason": exam.state_reason,
            "missing_views": list(exam.missing_views or []),
            "revision": exam.revision,
            "images": images,
            "study_date": exam.study_date,
            "accession_number": exam.accession_number,
            "source_ae": exam.source_ae,
            "first_received_at": iso(exam.first_received_at),
            "last_received_at": iso(exam.last_received_at),
            "state_changed_at": iso(exam.state_changed_at),
        }

    @classmethod
    def of(cls, exam: Exam, images: int) -> ExamSummary:
        return cls(**cls.fields_of(exam, images))


class WorklistRow(ExamSummary):
    """A worklist row: the exam, its patient and its latest result."""

    patient: PatientInfo
    result: Result | None

    @classmethod
    def of_row(
        cls, exam: Exam, images: int, patient: Patient, result: ResultRow | None
    ) -> WorklistRow:
        return cls(
            **cls.fields_of(exam, images),
            patient=PatientInfo.of(patient, exam),
            result=Result.of(result, exam) if result is not None else None,
        )


class NotScoredImage(Answer):
    """An acknowledged image kept out of scoring, with the rule and what it found."""

    sop_instance_uid: str
    reason: str
    detail: str


class InstanceInfo(Answer):
    """A stored instance and how the node read it (slot, where laterality and view came from)."""

    sop_instance_uid: str
    sop_class_uid: str
    sop_class: str  # its name
    kind: str
    role: str  # domain.ObjectRole: scored, repeat, prior, rejected, companion, output...
    rule: str  # the selection rule that gave the role
    detail: str
    series_uid: str
    origin: str
    transfer_syntax_uid: str
    slot: str | None
    laterality: str | None
    laterality_source: str
    view: str | None
    view_source: str
    presentation_intent: str
    pixel_check: str
    size_bytes: int
    sha256: str | None
    received_at: str | None
    calling_ae: str

    @classmethod
    def of(cls, i: Instance, roles: dict[str, ObjectDecision]) -> InstanceInfo:
        if i.origin == Origin.GENERATED.value:
            role = (ObjectRole.OUTPUT.value, "output", f"node {i.output_kind or 'output'}")
        elif (decision := roles.get(i.sop_instance_uid)) is not None:
            role = (decision.role.value, decision.rule, decision.detail)
        else:
            role = (ObjectRole.NOT_SCORED.value, "", "no slot")
        return cls(
            sop_instance_uid=i.sop_instance_uid,
            sop_class_uid=i.sop_class_uid,
            sop_class=sop_class_name(i.sop_class_uid),
            kind=i.kind,
            role=role[0],
            rule=role[1],
            detail=role[2],
            series_uid=i.series.series_uid,
            origin=i.origin,
            transfer_syntax_uid=i.transfer_syntax_uid,
            slot=i.slot,
            laterality=i.laterality,
            laterality_source=i.laterality_source,
            view=i.view,
            view_source=i.view_source,
            presentation_intent=i.presentation_intent,
            pixel_check=i.pixel_check,
            size_bytes=i.size_bytes,
            sha256=i.sha256,
            received_at=iso(i.received_at),
            calling_ae=i.calling_ae,
        )


class Conflict(Answer):
    """Other bytes under an acknowledged SOP Instance UID that the overwrite policy did not let
    replace the first: kept aside, listed on the exam and in the audit trail."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    role: str = ObjectRole.CONFLICT.value
    rule: str
    detail: str
    sha256: str | None
    size_bytes: int
    received_at: str | None
    calling_ae: str
    peer_host: str

    @classmethod
    def of(cls, c: InstanceConflict) -> Conflict:
        return cls(
            id=c.id,
            sop_instance_uid=c.sop_instance_uid,
            sop_class_uid=c.sop_class_uid,
            rule=f"overwrite_policy {c.policy}",
            detail=c.reason,
            sha256=c.sha256,
            size_bytes=c.size_bytes,
            received_at=iso(c.received_at),
            calling_ae=c.calling_ae,
            peer_host=c.peer_host,
        )


class StateChange(Answer):
    """One step in an exam's history (``from`` is empty for a new exam)."""

    at: str | None
    from_state: str = Field(alias="from")
    to: str
    reason: str

    @classmethod
    def of(cls, event: ExamEvent) -> StateChange:
        return cls(
            at=iso(event.at), from_state=event.from_state, to=event.to_state, reason=event.reason
        )


class ExamDetail(ExamSummary):
    """One exam as `exams show --json` prints it: which image fills each view, images kept out
    and why, its history and, once scored, its latest result."""

    patient_id: str
    patient: PatientInfo
    slots: dict[str, str | None]  # L-CC, L-MLO, R-CC, R-MLO -> SOP Instance UID
    not_scored: list[NotScoredImage]
    pixel_checks_pending: list[str]
    identity_conflict: str  # why the exam is held: its images name different women
    selection_notes: list[str]
    instances: list[InstanceInfo]  # every object of the study, with its role
    conflicts: list[Conflict]
    events: list[StateChange]
    attempts: int
    last_error: str  # first line only
    result: ResultDetail | None = None


class OutputFile(Answer):
    """An output object as the exam page lists it; ``rel_path`` stays on the server."""

    kind: str
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    rel_path: str = Field(exclude=True)
    laterality: str | None
    slot: str | None = None  # the view it was made for (per-view outputs)

    @classmethod
    def of(cls, instance: Instance) -> OutputFile:
        return cls(
            kind=instance.output_kind or "",
            sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            series_uid=instance.series.series_uid,
            rel_path=instance.rel_path,
            laterality=instance.laterality,
            slot=instance.slot,
        )


class ViewCell(Answer):
    """One of the four screen positions of the hanging protocol."""

    slot: str
    sop_instance_uid: str | None = None
    rows: int | None = None
    columns: int | None = None
    score: ViewScore | None = None
    sc_sop_instance_uid: str | None = None
    seg_sop_instance_uid: str | None = None
    why_empty: str = ""


class ExamPage(ExamDetail):
    """Everything the exam page shows (and /api/exams/{uid} returns): the detail, the
    patient, the four views in hanging order, the outputs and per-destination delivery."""

    study_description: str = Field(exclude=True)
    study_time: str = Field(exclude=True)
    views: list[ViewCell] = Field(default_factory=list)
    outputs: list[OutputFile] = Field(default_factory=list)
    deliveries: list[DestinationDeliveries] = Field(default_factory=list)
