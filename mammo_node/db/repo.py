"""The SQL the node runs, in one place. Functions take a Session inside a transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mammo_node.db.models import Base, Exam, ExamEvent, Instance, Patient, Series, utcnow
from mammo_node.domain import ExamState, NotScoredReason, ObjectKind, Origin, PixelCheck, Slot
from mammo_node.grouping.rules import ImageFacts, Resolution, resolve

M = TypeVar("M", bound=Base)


def get_or_create(session: Session, model: type[M], key: str, value: str, **values: Any) -> M:
    """Row of ``model`` whose unique column ``key`` equals ``value``; created if absent.

    Race-free: INSERT ... ON CONFLICT DO NOTHING, then SELECT (two associations may create
    the same exam at once on PostgreSQL).
    """
    column = getattr(model, key)
    found = session.scalars(select(model).where(column == value)).first()
    if found is not None:
        return found
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__  # type: ignore[attr-defined]
    # Core applies the columns' Python defaults to the ones not given here
    statement = insert(table).values(**values, **{key: value})  # type: ignore[arg-type]
    session.execute(statement.on_conflict_do_nothing())
    return session.scalars(select(model).where(column == value)).one()


def set_exam_state(
    session: Session, exam: Exam, state: ExamState, reason: str, *, now: dt.datetime | None = None
) -> None:
    """Change an exam's state and append the event that says why."""
    now = now or utcnow()
    session.add(
        ExamEvent(
            exam_fk=exam.id, at=now, from_state=exam.state, to_state=state.value, reason=reason
        )
    )
    exam.state = state.value
    exam.state_reason = reason
    exam.state_changed_at = now


def exam_by_uid(session: Session, study_uid: str) -> Exam | None:
    return session.scalars(select(Exam).where(Exam.study_uid == study_uid)).first()


def received_images(session: Session, exam: Exam) -> Sequence[Instance]:
    return session.scalars(
        select(Instance)
        .where(Instance.exam_fk == exam.id, Instance.origin == Origin.RECEIVED.value)
        .order_by(Instance.id)
    ).all()


def image_facts(instance: Instance) -> ImageFacts:
    return ImageFacts(
        sop_instance_uid=instance.sop_instance_uid,
        slot=Slot.parse(instance.slot) if instance.slot else None,
        for_processing=instance.presentation_intent == "FOR PROCESSING",
        rule=NotScoredReason(instance.rule) if instance.rule else None,
        rule_detail=instance.rule_detail,
        pixel_check=PixelCheck(instance.pixel_check),
        pixel_detail=instance.pixel_detail,
        kind=ObjectKind(instance.kind) if instance.kind else ObjectKind.IMAGE,
        instance_number=instance.instance_number,
        facts=dict(instance.facts or {}),
    )


def resolve_exam(session: Session, exam: Exam) -> Resolution:
    return resolve(image_facts(i) for i in received_images(session, exam))


def patient_key(patient_id: str, issuer: str) -> str:
    return f"{issuer}\\{patient_id}"


def upsert_patient(
    session: Session, *, study_uid: str, patient_id: str, issuer: str, **values: str
) -> Patient:
    """The patient row a new study links to: matched on (IssuerOfPatientID, PatientID).

    An empty PatientID matches nobody: the study gets a patient row of its own (two women
    registered without an ID are two patients). A found row keeps its attributes: the exam
    holds its own (``Exam.patient_name`` ...), so a later study never renames an earlier one.
    """
    key = patient_key(patient_id, issuer) if patient_id.strip() else f"study:{study_uid}"
    return get_or_create(
        session,
        Patient,
        "patient_key",
        key,
        patient_id=patient_id,
        issuer=issuer,
        **values,
    )


def upsert_series(session: Session, exam: Exam, series_uid: str, **values: Any) -> Series:
    return get_or_create(session, Series, "series_uid", series_uid, exam_fk=exam.id, **values)
