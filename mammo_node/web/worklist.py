"""Read models for the worklist, the exam page and the JSON API (built on mammo_node.exams).

``worklist`` lists exams with their latest result; ``exam_view`` is one exam as the exam page
shows it: the four views in hanging order with their images, scores, ROIs and saliency
captures, what the node decided and why, and where the results went.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from mammo_node.db.models import Destination, Exam, Instance, OutboxItem, Patient, Result
from mammo_node.db.session import Database
from mammo_node.domain import ExamState, Origin, OutboxState
from mammo_node.exams import ExamNotFoundError, exam_detail, image_counts
from mammo_node.web.dicomjson import HeaderCache, first_value
from mammo_node.web.errors import WebError

SORTS = ("newest", "risk")
# screen order of the hanging protocol: R on the left, L on the right; CC on top, MLO below
HANGING_ORDER: tuple[str, ...] = ("R-CC", "L-CC", "R-MLO", "L-MLO")


def check_filters(state: str, sort: str) -> None:
    """400 for a state or sort order the worklist does not know."""
    states = [s.value for s in ExamState]
    if state and state not in states:
        raise WebError(400, f"state {state!r}: expected one of {', '.join(states)}")
    if sort not in SORTS:
        raise WebError(400, f"sort {sort!r}: expected one of {', '.join(SORTS)}")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _latest_results() -> Any:
    return (
        select(Result.exam_fk.label("exam_fk"), func.max(Result.id).label("result_id"))
        .group_by(Result.exam_fk)
        .subquery()
    )


def result_json(result: Result, exam: Exam) -> dict[str, Any]:
    to_result = (result.created_at - exam.last_received_at).total_seconds()
    return {
        "id": result.id,
        "exam_score": result.exam_score,
        "score_kind": result.score_kind,
        "breast_scores": dict(result.breast_scores or {}),
        "images": dict(result.images or {}),
        "verdicts": dict(result.verdicts or {}),
        "model": {
            "name": result.model_name,
            "version": result.model_version,
            "is_demo": result.model_is_demo,
        },
        "created_at": _iso(result.created_at),
        "exam_revision": result.exam_revision,
        "stale": result.exam_revision != exam.revision,
        "seconds_to_result": max(0.0, to_result),
        "timings": dict(result.timings or {}),
        "device": result.device,
        "sr_sop_instance_uid": result.sr_sop_instance_uid,
    }


def patient_json(patient: Patient, exam: Exam) -> dict[str, str]:
    """The exam's own woman: identifiers from the patient row, attributes as her study sent
    them (a later study of another woman under the same ID never renames this one)."""
    return {
        "name": exam.patient_name.replace("^", " ").strip(),
        "id": patient.patient_id,
        "issuer": patient.issuer,
        "birth_date": exam.patient_birth_date,
        "sex": exam.patient_sex,
    }


def _worklist_query(state: str | None, sort: str, search: str | None) -> Select[Any]:
    latest = _latest_results()
    query = (
        select(Exam, Patient, Result)
        .join(Patient, Exam.patient_fk == Patient.id)
        .outerjoin(latest, latest.c.exam_fk == Exam.id)
        .outerjoin(Result, Result.id == latest.c.result_id)
    )
    if state:
        query = query.where(Exam.state == state)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(
            or_(
                func.lower(Exam.patient_name).like(pattern),
                func.lower(Patient.patient_id).like(pattern),
                func.lower(Exam.accession_number).like(pattern),
                Exam.study_uid.like(f"{search}%"),
            )
        )
    if sort == "risk":
        return query.order_by(
            Result.exam_score.desc().nulls_last(), Exam.last_received_at.desc(), Exam.id.desc()
        )
    return query.order_by(Exam.last_received_at.desc(), Exam.id.desc())


def worklist(
    db: Database,
    *,
    state: str | None = None,
    sort: str = "newest",
    limit: int = 200,
    search: str | None = None,
) -> list[dict[str, Any]]:
    """Exams with their latest result, newest first or highest exam score first."""
    if sort not in SORTS:
        raise ValueError(f'Argument "sort" should be one of {SORTS}, got {sort!r}.')
    with db.read() as session:
        rows = session.execute(_worklist_query(state, sort, search).limit(limit)).all()
        counts = image_counts(session, [exam.id for exam, _, _ in rows])
        return [
            {
                "study_uid": exam.study_uid,
                "state": exam.state,
                "reason": exam.state_reason,
                "missing_views": list(exam.missing_views or []),
                "images": counts.get(exam.id, 0),
                "study_date": exam.study_date,
                "accession_number": exam.accession_number,
                "source_ae": exam.source_ae,
                "last_received_at": _iso(exam.last_received_at),
                "patient": patient_json(patient, exam),
                "result": result_json(result, exam) if result is not None else None,
            }
            for exam, patient, result in rows
        ]


def state_counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        found = dict(session.execute(select(Exam.state, func.count()).group_by(Exam.state)).all())
    return {state.value: int(found.get(state.value, 0)) for state in ExamState}


# --- one exam ---------------------------------------------------------------------------------
@dataclass
class ViewCell:
    """One of the four screen positions of the hanging protocol."""

    slot: str
    sop_instance_uid: str | None = None
    rows: int | None = None
    columns: int | None = None
    score: dict[str, Any] | None = None  # holistic, attention, ensemble, coa, roi
    sc_sop_instance_uid: str | None = None
    seg_sop_instance_uid: str | None = None
    why_empty: str = ""


@dataclass
class ExamView:
    detail: dict[str, Any]
    patient: dict[str, str]
    study_description: str
    study_time: str
    result: dict[str, Any] | None
    cells: list[ViewCell]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.detail,
            "patient": self.patient,
            "result": self.result,
            "views": [cell.__dict__ for cell in self.cells],
            "outputs": self.outputs,
            "deliveries": self.deliveries,
        }


def exam_view(db: Database, headers: HeaderCache, study_uid: str) -> ExamView:
    """Everything the exam page shows; raises ExamNotFoundError."""
    detail = exam_detail(db, study_uid, with_result=False)  # the page reads its own below
    with db.read() as session:
        exam = session.scalars(select(Exam).where(Exam.study_uid == study_uid)).first()
        if exam is None:
            raise ExamNotFoundError(f"no exam with StudyInstanceUID {study_uid}")
        result = session.scalars(
            select(Result).where(Result.exam_fk == exam.id).order_by(Result.id.desc()).limit(1)
        ).first()
        received = {
            i.sop_instance_uid: {
                "slot": i.slot,
                "origin": i.origin,
                "rows": i.rows,
                "columns": i.columns,
            }
            for i in session.scalars(select(Instance).where(Instance.exam_fk == exam.id))
        }
        outputs = [_output_json(o) for o in _outputs(session, result)] if result else []
        deliveries = _deliveries(session, result) if result is not None else []
        view = ExamView(
            detail=detail,
            patient=patient_json(exam.patient, exam),
            study_description=exam.study_description,
            study_time=exam.study_time,
            result=result_json(result, exam) if result is not None else None,
            cells=[],
            outputs=outputs,
            deliveries=deliveries,
        )
    sc_for = _saliency_captures(headers, outputs)
    seg_for = _segmentations(headers, outputs)
    scores = (view.result or {}).get("images", {})
    kept_out = {n["sop_instance_uid"]: n for n in detail["not_scored"]}
    for slot in HANGING_ORDER:
        uid = detail["slots"].get(slot)
        cell = ViewCell(slot=slot, sop_instance_uid=uid)
        if uid is None:
            cell.why_empty = _why_missing(slot, detail, kept_out, received)
        else:
            instance = received.get(uid, {})
            cell.rows = instance.get("rows")
            cell.columns = instance.get("columns")
            cell.score = scores.get(uid)
            cell.sc_sop_instance_uid = sc_for.get(uid)
            cell.seg_sop_instance_uid = seg_for.get(uid)
        view.cells.append(cell)
    return view


def _why_missing(
    slot: str,
    detail: dict[str, Any],
    kept_out: dict[str, dict[str, Any]],
    received: dict[str, dict[str, Any]],
) -> str:
    candidates = [
        kept_out[uid]
        for uid, row in received.items()
        if row["slot"] == slot and uid in kept_out and row["origin"] == Origin.RECEIVED.value
    ]
    if candidates:
        reasons = sorted({f"{c['reason']}: {c['detail']}" for c in candidates})
        return "image kept out - " + "; ".join(reasons)
    return "no image received for this view"


def _outputs(session: Session, result: Result) -> list[Instance]:
    return list(
        session.scalars(
            select(Instance).where(Instance.result_fk == result.id).order_by(Instance.id)
        )
    )


def _output_json(instance: Instance) -> dict[str, Any]:
    return {
        "kind": instance.output_kind,
        "sop_instance_uid": instance.sop_instance_uid,
        "sop_class_uid": instance.sop_class_uid,
        "series_uid": instance.series.series_uid,
        "rel_path": instance.rel_path,
        "laterality": instance.laterality,
    }


def _saliency_captures(headers: HeaderCache, outputs: list[dict[str, Any]]) -> dict[str, str]:
    """source SOP Instance UID -> its Secondary Capture (from the SC's SourceImageSequence)."""
    found: dict[str, str] = {}
    for output in outputs:
        if output["kind"] != "sc":
            continue
        header = headers.get(output["rel_path"])
        for item in header.get("00082112", {}).get("Value", []) or []:
            source = first_value(item, "00081155")
            if source:
                found[str(source)] = output["sop_instance_uid"]
    return found


def _segmentations(headers: HeaderCache, outputs: list[dict[str, Any]]) -> dict[str, str]:
    """source SOP Instance UID -> its SEG (from ReferencedSeriesSequence > instances)."""
    found: dict[str, str] = {}
    for output in outputs:
        if output["kind"] != "seg":
            continue
        header = headers.get(output["rel_path"])
        for series in header.get("00081115", {}).get("Value", []) or []:
            for item in series.get("0008114A", {}).get("Value", []) or []:
                source = first_value(item, "00081155")
                if source:
                    found[str(source)] = output["sop_instance_uid"]
    return found


def _deliveries(session: Session, result: Result) -> list[dict[str, Any]]:
    """Per destination: outbox rows of this result by state, attempts, the latest error."""
    rows = session.execute(
        select(OutboxItem, Destination, Instance.output_kind)
        .join(Destination, OutboxItem.destination_fk == Destination.id)
        .join(Instance, OutboxItem.instance_fk == Instance.id)
        .where(Instance.result_fk == result.id)
        .order_by(Destination.name, OutboxItem.id)
    ).all()
    by_destination: dict[int, dict[str, Any]] = {}
    for item, destination, kind in rows:
        entry = by_destination.setdefault(
            destination.id,
            {
                "destination": destination.name,
                "address": f"{destination.ae_title}@{destination.host}:{destination.port}",
                "enabled": destination.enabled,
                "config_error": destination.config_error,
                "states": {},
                "items": [],
                "attempts": 0,
                "last_error": "",
                "delivered_at": None,
            },
        )
        entry["states"][item.state] = entry["states"].get(item.state, 0) + 1
        entry["attempts"] = max(entry["attempts"], item.attempts)
        if item.last_error:
            entry["last_error"] = item.last_error
        if item.delivered_at and (
            entry["delivered_at"] is None or item.delivered_at.isoformat() > entry["delivered_at"]
        ):
            entry["delivered_at"] = item.delivered_at.isoformat()
        entry["items"].append(
            {
                "kind": kind,
                "state": item.state,
                "attempts": item.attempts,
                "last_status": item.last_status,
                "last_error": item.last_error,
                "next_attempt_at": _iso(item.next_attempt_at),
            }
        )
    for entry in by_destination.values():
        states = entry["states"]
        entry["summary"] = (
            "delivered"
            if set(states) == {OutboxState.DELIVERED}
            else "failed"
            if OutboxState.DEAD in states
            else "pending"
        )
    return list(by_destination.values())
