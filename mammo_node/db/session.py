"""The engine and session factory (created once per process) and schema migrations.

SQLite is the embedded default: WAL journal, ``synchronous=FULL`` (a committed row survives a
power cut) and ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout
instead of failing. PostgreSQL is used as is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mammo_node.errors import DatabaseError
from mammo_node.scrub import scrub

logger = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).resolve().parents[2] / "alembic"


def _normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (psycopg2 is not a dependency)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url``. SQLite writers begin IMMEDIATE (queue on the busy timeout);
    a ``read_only`` SQLite engine begins DEFERRED, so readers never wait for writers (WAL)."""
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _create_private(Path(path))
        # hide_parameters: an error message (logged, or raised as DatabaseError) shows the
        # statement, never the bound values (patient names, IDs)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
    )


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (it holds patient data); SQLite
    gives its -wal and -shm files the same permissions."""
    if path.exists():
        return
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)


class Database:
    """Engine + sessionmaker, built once and passed down."""

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        self.engine = create_db_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.engine.dialect.name == "sqlite":
            self.read_engine = create_db_engine(self.url, read_only=True)
            self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        else:
            self.read_engine = self.engine
            self._read_sessions = self._sessions

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database error ({self.dialect}): {scrub(str(exc))}") from exc
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (rolled back at the end); never waits for writers."""
        session = self._read_sessions()
        try:
            yield session
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database error ({self.dialect}): {scrub(str(exc))}") from exc
        finally:
            # close() ends the transaction (a rollback on the connection) and detaches the
            # objects read; a session rollback() would first expire every one of them, which
            # costs more than the query on a page of 200 exams
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()


def alembic_config(url: str, storage_dir: Path | None = None) -> Any:
    from alembic.config import Config

    if not (ALEMBIC_DIR / "env.py").is_file():
        raise DatabaseError(
            f"Alembic migrations not found at {ALEMBIC_DIR}; install mammo-node from its source "
            "tree (pip install -e .) so that the alembic/ folder is next to mammo_node/."
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", _normalise_url(url).replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    if storage_dir is not None:  # migrations that backfill from stored headers read here
        cfg.attributes["storage_dir"] = str(storage_dir)
    return cfg


def upgrade(url: str, revision: str = "head", *, storage_dir: Path | None = None) -> None:
    """Apply migrations up to ``revision`` (creates the schema on an empty database);
    ``storage_dir``: the instance store, for migrations that backfill columns from headers."""
    from alembic import command

    logger.info("applying database migrations up to %s", revision)
    try:
        command.upgrade(alembic_config(url, storage_dir), revision)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"migration failed: {scrub(str(exc))}") from exc


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
