"""Reading exams for the CLI and the web: the rows behind the answers in mammo_node.responses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from mammo_node.db import repo
from mammo_node.db.models import Destination, Exam, Instance, OutboxItem, Result
from mammo_node.db.session import Database
from mammo_node.domain import Origin
from mammo_node.errors import NotFoundError
from mammo_node.grouping.rules import describe_slots, summarise
from mammo_node.responses import (
    Conflict,
    Delivery,
    ExamDetail,
    ExamSummary,
    InstanceInfo,
    NotScoredImage,
    OutputRef,
    PatientInfo,
    ResultDetail,
    StateChange,
)

# the name other modules imported before NotFoundError was the one not-found error
ExamNotFoundError = NotFoundError


def list_exams(db: Database, *, state: str | None = None, limit: int = 200) -> list[ExamSummary]:
    with db.read() as session:
        query = select(Exam).order_by(Exam.last_received_at.desc(), Exam.id.desc()).limit(limit)
        if state:
            query = query.where(Exam.state == state)
        exams = session.scalars(query).all()
        counts = image_counts(session, [e.id for e in exams])
        return [ExamSummary.of(exam, counts.get(exam.id, 0)) for exam in exams]


def image_counts(session: Session, exam_ids: list[int]) -> dict[int, int]:
    if not exam_ids:
        return {}
    rows = session.execute(
        select(Instance.exam_fk, func.count())
        .where(Instance.exam_fk.in_(exam_ids), Instance.origin == Origin.RECEIVED.value)
        .group_by(Instance.exam_fk)
    ).all()
    return {exam_id: count for exam_id, count in rows}


def read_exam(db: Database, study_uid: str) -> ExamDetail:
    """The exam `exams show` prints: state, slots, images kept out and why, latest result."""
    with db.read() as session:
        return exam_in(session, find_exam(session, study_uid))


def exam_detail(db: Database, study_uid: str) -> dict[str, Any]:
    """The exam as `exams show --json` prints it (``read_exam`` as JSON)."""
    return read_exam(db, study_uid).to_json()


def find_exam(session: Session, study_uid: str) -> Exam:
    exam = repo.exam_by_uid(session, study_uid)
    if exam is None:
        raise NotFoundError(f"no exam with StudyInstanceUID {study_uid}")
    return exam


def exam_in(session: Session, exam: Exam) -> ExamDetail:
    """Build the detail of ``exam`` from its rows, in the caller's session."""
    resolution = repo.resolve_exam(session, exam)
    return ExamDetail(
        **ExamSummary.fields_of(exam, image_counts(session, [exam.id]).get(exam.id, 0)),
        patient_id=exam.patient.patient_id,
        patient=PatientInfo.of(exam.patient, exam),
        slots=describe_slots(resolution),
        not_scored=[NotScoredImage(**n) for n in summarise(resolution.not_scored)],
        pixel_checks_pending=list(resolution.pending),
        identity_conflict=resolution.identity_conflict,
        selection_notes=list(resolution.notes),
        instances=[
            InstanceInfo.of(i, resolution.roles) for i in _instances_with_series(session, exam)
        ],
        conflicts=[Conflict.of(c) for c in exam.conflicts],
        events=[StateChange.of(e) for e in exam.events],
        attempts=exam.attempts,
        last_error=exam.last_error.split("\n", 1)[0],
        result=latest_result(session, exam),
    )


def _instances_with_series(session: Session, exam: Exam) -> list[Instance]:
    """The exam's instances and their series in one query (not one per series)."""
    return list(
        session.scalars(
            select(Instance)
            .where(Instance.exam_fk == exam.id)
            .options(joinedload(Instance.series))
            .order_by(Instance.id)
        )
    )


def latest_result(session: Session, exam: Exam) -> ResultDetail | None:
    result = session.scalars(
        select(Result).where(Result.exam_fk == exam.id).order_by(Result.id.desc())
    ).first()
    if result is None:
        return None
    return ResultDetail.with_outputs(
        result,
        exam,
        outputs=result_outputs(session, result),
        deliveries=deliveries_of(session, result),
    )


def result_outputs(session: Session, result: Result) -> list[OutputRef]:
    outputs = session.execute(
        select(Instance.sop_instance_uid, Instance.output_kind, Instance.slot)
        .where(Instance.result_fk == result.id)
        .order_by(Instance.id)
    ).all()
    return [OutputRef(sop_instance_uid=u, kind=k, slot=s) for u, k, s in outputs]


def deliveries_of(session: Session, result: Result) -> list[Delivery]:
    """The outbox rows of one result's outputs, oldest first."""
    rows = session.execute(
        select(OutboxItem, Destination.name, Instance.sop_instance_uid, Instance.output_kind)
        .join(Destination, OutboxItem.destination_fk == Destination.id)
        .join(Instance, OutboxItem.instance_fk == Instance.id)
        .where(Instance.result_fk == result.id)
        .order_by(OutboxItem.id)
    ).all()
    return [Delivery.of(item, name, uid, kind) for item, name, uid, kind in rows]
