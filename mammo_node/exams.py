"""Read models of exams for the CLI and the web: what a person asks about an exam."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammo_node.db import repo
from mammo_node.db.models import Destination, Exam, Instance, OutboxItem, Result
from mammo_node.db.session import Database
from mammo_node.domain import Origin
from mammo_node.errors import MammoNodeError
from mammo_node.grouping.rules import describe_slots, summarise


class ExamNotFoundError(MammoNodeError):
    """No exam with that StudyInstanceUID."""


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def delivery_json(item: OutboxItem, destination: str, sop_uid: str, kind: str) -> dict[str, Any]:
    """One outbox row as `exams show` and `outbox list` print it."""
    return {
        "id": item.id,
        "destination": destination,
        "sop_instance_uid": sop_uid,
        "output": kind,
        "state": item.state,
        "attempts": item.attempts,
        "last_status": item.last_status,
        "last_error": item.last_error,
        "next_attempt_at": _iso(item.next_attempt_at),
        "delivered_at": _iso(item.delivered_at),
    }


def _summary(exam: Exam, counts: dict[int, int]) -> dict[str, Any]:
    return {
        "study_uid": exam.study_uid,
        "state": exam.state,
        "reason": exam.state_reason,
        "missing_views": list(exam.missing_views or []),
        "revision": exam.revision,
        "images": counts.get(exam.id, 0),
        "study_date": exam.study_date,
        "accession_number": exam.accession_number,
        "source_ae": exam.source_ae,
        "first_received_at": _iso(exam.first_received_at),
        "last_received_at": _iso(exam.last_received_at),
        "state_changed_at": _iso(exam.state_changed_at),
    }


def list_exams(db: Database, *, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    with db.read() as session:
        query = select(Exam).order_by(Exam.last_received_at.desc(), Exam.id.desc()).limit(limit)
        if state:
            query = query.where(Exam.state == state)
        exams = session.scalars(query).all()
        counts = image_counts(session, [e.id for e in exams])
        return [_summary(exam, counts) for exam in exams]


def image_counts(session: Session, exam_ids: list[int]) -> dict[int, int]:
    if not exam_ids:
        return {}
    rows = session.execute(
        select(Instance.exam_fk, func.count())
        .where(Instance.exam_fk.in_(exam_ids), Instance.origin == Origin.RECEIVED.value)
        .group_by(Instance.exam_fk)
    ).all()
    return {exam_id: count for exam_id, count in rows}


def exam_detail(db: Database, study_uid: str, *, with_result: bool = True) -> dict[str, Any]:
    """The exam as `exams show --json` prints it: state, slots, images kept out and why.

    ``with_result=False`` leaves out the latest result (for callers that project it their
    own way, such as the exam page) so that it is not read twice.
    """
    with db.read() as session:
        exam = repo.exam_by_uid(session, study_uid)
        if exam is None:
            raise ExamNotFoundError(f"no exam with StudyInstanceUID {study_uid}")
        resolution = repo.resolve_exam(session, exam)
        detail = _summary(exam, image_counts(session, [exam.id]))
        detail["patient_id"] = exam.patient.patient_id
        detail["slots"] = describe_slots(resolution)
        detail["not_scored"] = summarise(resolution.not_scored)
        detail["pixel_checks_pending"] = list(resolution.pending)
        detail["instances"] = [
            {
                "sop_instance_uid": i.sop_instance_uid,
                "sop_class_uid": i.sop_class_uid,
                "series_uid": i.series.series_uid,
                "origin": i.origin,
                "transfer_syntax_uid": i.transfer_syntax_uid,
                "slot": i.slot,
                "laterality": i.laterality,
                "laterality_source": i.laterality_source,
                "view": i.view,
                "view_source": i.view_source,
                "presentation_intent": i.presentation_intent,
                "pixel_check": i.pixel_check,
                "size_bytes": i.size_bytes,
                "sha256": i.sha256,
                "received_at": _iso(i.received_at),
                "calling_ae": i.calling_ae,
            }
            for i in sorted(exam.instances, key=lambda i: i.id)
        ]
        detail["events"] = [
            {"at": _iso(e.at), "from": e.from_state, "to": e.to_state, "reason": e.reason}
            for e in exam.events
        ]
        detail["attempts"] = exam.attempts
        detail["last_error"] = exam.last_error.split("\n", 1)[0]
        if with_result:
            detail["result"] = _latest_result(session, exam)
        return detail


def _latest_result(session: Session, exam: Exam) -> dict[str, Any] | None:
    result = session.scalars(
        select(Result).where(Result.exam_fk == exam.id).order_by(Result.id.desc())
    ).first()
    if result is None:
        return None
    deliveries = session.execute(
        select(OutboxItem, Destination.name, Instance.sop_instance_uid, Instance.output_kind)
        .join(Destination, OutboxItem.destination_fk == Destination.id)
        .join(Instance, OutboxItem.instance_fk == Instance.id)
        .where(Instance.result_fk == result.id)
        .order_by(OutboxItem.id)
    ).all()
    outputs = session.execute(
        select(Instance.sop_instance_uid, Instance.output_kind, Instance.slot)
        .where(Instance.result_fk == result.id)
        .order_by(Instance.id)
    ).all()
    return {
        "id": result.id,
        "exam_revision": result.exam_revision,
        "current": result.exam_revision == exam.revision,
        "created_at": _iso(result.created_at),
        "exam_score": result.exam_score,
        "breast_scores": result.breast_scores,
        "images": result.images,
        "verdicts": result.verdicts,
        "score_kind": result.score_kind,
        "model": {
            "name": result.model_name,
            "version": result.model_version,
            "demo": result.model_is_demo,
            "bundle_sha256": result.bundle_sha256,
        },
        "device": result.device,
        "timings": result.timings,
        "sr_sop_instance_uid": result.sr_sop_instance_uid,
        "previous_result_id": result.previous_result_fk,
        "outputs": [{"sop_instance_uid": u, "kind": k, "slot": s} for u, k, s in outputs],
        "deliveries": [
            delivery_json(item, name, uid, kind) for item, name, uid, kind in deliveries
        ],
    }
