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
