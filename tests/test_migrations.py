"""Migrations from empty on SQLite and PostgreSQL match the models, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mammo_node.db.models import Base
from mammo_node.db.session import create_db_engine, current_revision, upgrade


def _diff(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_the_models(db_url: str) -> None:
    upgrade(db_url)
    assert current_revision(db_url) is not None
    assert _diff(db_url) == []


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    from alembic import command

    from mammo_node.db.session import alembic_config

    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "base")
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert _diff(db_url) == []


def test_0013_fills_each_exams_latest_score_and_category_from_its_latest_result(
    db_url: str,
) -> None:
    from alembic import command
    from sqlalchemy import select

    from mammo_node.db.models import Exam, Result
    from mammo_node.db.session import Database, alembic_config
    from mammo_node.synth.bulk import insert_index_rows

    upgrade(db_url)
    db = Database(db_url)
    try:
        insert_index_rows(db, first=0, count=3)
        with db.session() as session:  # a rescored exam: a second, newer result
            exam = session.scalars(select(Exam).order_by(Exam.id)).first()
            assert exam is not None
            old = session.scalars(select(Result).where(Result.exam_fk == exam.id)).one()
            session.add(
                Result(
                    exam_fk=exam.id,
                    exam_revision=1,
                    model_name=old.model_name,
                    model_version=old.model_version,
                    model_is_demo=True,
                    score_kind=old.score_kind,
                    exam_score=old.exam_score + 5.0,
                    breast_scores={},
                    images={},
                    verdicts={},
                    timings={},
                    worker="test",
                    device="cpu",
                    sr_sop_instance_uid="2.25.1",
                    selection={},
                    category=10,
                )
            )
            rescored, newest = exam.id, old.exam_score + 5.0
        with db.session() as session:
            expected = {
                e.id: (e.latest_exam_score, e.latest_category)
                for e in session.scalars(select(Exam))
            }
        expected[rescored] = (newest, 10)
        command.downgrade(alembic_config(db_url), "0012")
        command.upgrade(alembic_config(db_url), "head")
        with db.read() as session:
            found = {
                e.id: (e.latest_exam_score, e.latest_category)
                for e in session.scalars(select(Exam))
            }
        assert found == expected
        assert all(score is not None for score, _ in found.values())
    finally:
        db.dispose()
