"""Where this machine keeps what the tests use: the shared real data and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _shared_dir() -> Path:
    """The project's shared folder (real data, tools): MAMMO_SHARED, else ../shared beside the
    repository (the layout the project documents), else the workplace's /work/shared."""
    if os.environ.get("MAMMO_SHARED"):
        return Path(os.environ["MAMMO_SHARED"])
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if (candidate / "realdata").is_dir():
            return candidate
    return REPO.parent / "shared"


SHARED = _shared_dir()
PG_ADMIN_URL = os.environ.get("MAMMO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pg_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"mammo_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
