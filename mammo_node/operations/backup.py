"""Backup and restore of a node: its database and the instance files it points at.

A backup is consistent while the node runs. The database is copied first, as one snapshot:

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies every page under one
  read transaction; in WAL mode the node keeps writing meanwhile.
- PostgreSQL: ``pg_dump --format=custom`` of a snapshot that a REPEATABLE READ transaction
  exports (``pg_export_snapshot()``), and the list of files is read in that same transaction.

Then every instance file that the snapshot's rows name (and that retention has not pruned)
is copied. Stored files are never changed in place (a replacement gets a new file name), so
copying them after the snapshot gives the same bytes the snapshot points at. A file that was
deleted between the snapshot and the copy (pruned, or replaced by a newer version) is listed
in the backup as missing, and restore marks its row pruned. Backing up into the same folder
again copies only the new files (incremental) and drops the ones no longer named.

Layout of a backup folder: ``backup.json`` (what, when, counts), ``mammo.db`` (SQLite) or
``database.pgdump`` (PostgreSQL), ``files.tsv`` (path, size, sha256 of every file copied) and
``instances/`` (the files, in the store's layout).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mammo_node import __version__
from mammo_node.config import Settings
from mammo_node.db.models import Exam, Instance, OutboxItem, Result, utcnow
from mammo_node.db.session import Database, current_revision, upgrade
from mammo_node.errors import MammoNodeError

logger = logging.getLogger(__name__)

FORMAT = "mammo-node-backup/1"
MANIFEST = "backup.json"
FILES = "files.tsv"
SQLITE_FILE = "mammo.db"
PG_DUMP = "database.pgdump"
_CHUNK = 4 * 1024 * 1024


class BackupError(MammoNodeError):
    """A backup could not be written or a restore could not be done."""


@dataclass
class BackupReport:
    directory: str
    database: str  # sqlite, postgresql
    revision: str | None
    created_at: str
    counts: dict[str, Any]
    files: int = 0
    bytes: int = 0
    copied: int = 0  # files copied this time (the others were already in the folder)
    removed: int = 0  # files no longer named by the database, dropped from the folder
    missing: list[str] = field(default_factory=list)  # rel paths gone after the snapshot

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "node_version": __version__, **asdict(self)}


@dataclass
class RestoreReport:
    directory: str
    data_dir: str
    database_url: str
    counts: dict[str, Any]
    files: int
    bytes: int
    marked_pruned: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        return data


# --- what a database holds -----------------------------------------------------------------
def database_counts(db: Database) -> dict[str, Any]:
    """Exams by state, results, deliveries by state: what a restore must bring back."""
    with db.read() as session:
        exams = dict(session.execute(select(Exam.state, func.count()).group_by(Exam.state)).all())
        outbox = dict(
            session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all()
        )
        results = session.scalar(select(func.count()).select_from(Result)) or 0
        instances = session.scalar(select(func.count()).select_from(Instance)) or 0
    return {
        "exams": {k: int(v) for k, v in sorted(exams.items())},
        "results": int(results),
        "instances": int(instances),
        "outbox": {k: int(v) for k, v in sorted(outbox.items())},
    }


# --- backup --------------------------------------------------------------------------------
def backup(settings: Settings, directory: Path) -> BackupReport:
    """Write (or bring up to date) a backup of the node in ``directory``."""
    directory = directory.resolve()
    if directory.is_relative_to(settings.data_dir.resolve()):
        raise BackupError(
            f"backup folder {directory} lies inside the data directory; choose another disk"
        )
    directory.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    try:
        created = utcnow().isoformat()
        if db.dialect == "sqlite":
            rows = _sqlite_snapshot(settings.database_url, directory)
            counts = _counts_of_sqlite_copy(directory / SQLITE_FILE)
        elif db.dialect == "postgresql":
            rows, counts = _postgres_snapshot(db, directory)
        else:
            raise BackupError(f"cannot back up a {db.dialect} database")
        report = BackupReport(
            directory=str(directory),
            database=db.dialect,
            revision=_revision_of(settings.database_url),
            created_at=created,
            counts=counts,
        )
        _copy_files(settings.storage_dir.resolve(), directory, rows, report)
        (directory / MANIFEST).write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
        from mammo_node.observe import audit

        with db.session() as session:
            audit.record_in(
                session,
                "backup",
                audit.BACKUP,
                str(directory)[:128],
                files=report.files,
                bytes=report.bytes,
                missing=len(report.missing),
            )
    finally:
        db.dispose()
    logger.info(
        "backup in %s: %d file(s), %d copied, %d missing",
        directory,
        report.files,
        report.copied,
        len(report.missing),
    )
    return report


def _revision_of(url: str) -> str | None:
    try:
        return current_revision(url)
    except SQLAlchemyError as exc:  # the snapshot is taken; the revision is only reported
        logger.warning("could not read the schema revision: %s", exc)
        return None


def _sqlite_path(url: str) -> Path:
    path = make_url(url).database
    if not path or path == ":memory:":
        raise BackupError(f"the SQLite database {url!r} is not a file")
    return Path(path)


def _sqlite_snapshot(url: str, directory: Path) -> list[tuple[str, int]]:
    """Copy the database with the online backup API; returns the files its rows name."""
    target = directory / SQLITE_FILE
    temp = directory / (SQLITE_FILE + ".partial")
    temp.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True, timeout=60)
    try:
        dest = sqlite3.connect(temp)
        try:
            source.backup(dest)  # all pages in one step: one consistent snapshot
            dest.execute("PRAGMA journal_mode=DELETE")
            rows = dest.execute(
                "SELECT rel_path, size_bytes FROM instances WHERE pruned_at IS NULL"
            ).fetchall()
        finally:
            dest.close()
    except sqlite3.Error as exc:
        temp.unlink(missing_ok=True)
        raise BackupError(f"SQLite backup failed: {exc}") from exc
    finally:
        source.close()
    os.replace(temp, target)
    return [(str(r), int(s)) for r, s in rows]


def _counts_of_sqlite_copy(path: Path) -> dict[str, Any]:
    db = Database(f"sqlite:///{path}")
    try:
        return database_counts(db)
    finally:
        db.dispose()


def _libpq_url(url: str) -> str:
    """The URL pg_dump / pg_restore / psql understand (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client (apt install postgresql-client) "
            "of the server's major version or newer"
        )
    return tool


def _postgres_snapshot(
    db: Database, directory: Path
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """pg_dump of an exported snapshot, and the file list read in that same snapshot."""
    tool = _pg_tool("pg_dump")
    temp = directory / (PG_DUMP + ".partial")
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            run = subprocess.run(
                [
                    tool,
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    f"--file={temp}",
                    _libpq_url(db.url),
                ],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                temp.unlink(missing_ok=True)
                raise BackupError(f"pg_dump failed: {run.stderr.strip()[-2000:]}")
            rows = conn.execute(
                select(Instance.rel_path, Instance.size_bytes).where(Instance.pruned_at.is_(None))
            ).all()
            counts = _counts_in(conn)
    os.replace(temp, directory / PG_DUMP)
    return [(str(r), int(s)) for r, s in rows], counts


def _counts_in(conn: Any) -> dict[str, Any]:
    exams = dict(conn.execute(select(Exam.state, func.count()).group_by(Exam.state)).all())
    outbox = dict(
        conn.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all()
    )
    return {
        "exams": {k: int(v) for k, v in sorted(exams.items())},
        "results": int(conn.execute(select(func.count()).select_from(Result)).scalar_one()),
        "instances": int(conn.execute(select(func.count()).select_from(Instance)).scalar_one()),
        "outbox": {k: int(v) for k, v in sorted(outbox.items())},
    }


def _copy_files(
    store: Path, directory: Path, rows: Iterable[tuple[str, int]], report: BackupReport
) -> None:
    """Copy the named files not yet in the folder; write files.tsv; drop files not named."""
    target_root = directory / "instances"
    previous = _read_files_tsv(directory / FILES)
    named: set[str] = set()
    listing = directory / (FILES + ".partial")
    with listing.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        for rel_path, size in rows:
            source = _inside(store, rel_path)
            target = _inside(target_root, rel_path)
            known = previous.get(rel_path)
            if known and known[0] == size and target.is_file() and target.stat().st_size == size:
                digest = known[1]  # stored files never change in place: already backed up
            else:
                try:
                    digest = _copy_hashing(source, target)
                except FileNotFoundError:
                    report.missing.append(rel_path)
                    continue
                report.copied += 1
            named.add(rel_path)
            writer.writerow([rel_path, size, digest])
            report.files += 1
            report.bytes += size
    os.replace(listing, directory / FILES)
    for rel_path in set(previous) - named:
        _inside(target_root, rel_path).unlink(missing_ok=True)
        report.removed += 1


def _inside(root: Path, rel_path: str) -> Path:
    path = (root / rel_path).resolve()
    if not path.is_relative_to(root.resolve()):
        raise BackupError(f"path {rel_path!r} lies outside {root}")
    return path


def _copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".partial")
    with source.open("rb") as src, temp.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(temp, target)
    return digest.hexdigest()


def _read_files_tsv(path: Path) -> dict[str, tuple[int, str]]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {row[0]: (int(row[1]), row[2]) for row in csv.reader(fh, delimiter="\t") if row}


# --- restore -------------------------------------------------------------------------------
def restore(directory: Path, settings: Settings) -> RestoreReport:
    """Restore the backup in ``directory`` into the (new, empty) data dir / database of
    ``settings``, check every file against its recorded sha256, migrate to head."""
    directory = directory.resolve()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{directory} holds no {MANIFEST}: not a mammo-node backup")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}"
        )
    data_dir = settings.data_dir.resolve()
    store = settings.storage_dir.resolve()
    if store.is_dir() and any(p for p in store.iterdir() if p.name != ".tmp"):
        raise BackupError(f"{store} is not empty: restore goes into a new data directory")
    url = settings.database_url
    target_kind = make_url(url).get_backend_name()
    if target_kind != manifest["database"]:
        raise BackupError(
            f"the backup holds a {manifest['database']} database; restore it into "
            f"{manifest['database']} (given: {target_kind})"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    if target_kind == "sqlite":
        _restore_sqlite(directory, _sqlite_path(url))
    else:
        _restore_postgres(directory, url)
    files, size = _restore_files(directory, store)
    upgrade(url, storage_dir=store)
    db = Database(url)
    try:
        marked = _mark_missing_pruned(db, manifest.get("missing", []), manifest["created_at"])
        counts = database_counts(db)
    finally:
        db.dispose()
    return RestoreReport(str(directory), str(data_dir), url, counts, files, size, marked)


def _restore_sqlite(directory: Path, target: Path) -> None:
    if target.exists():
        raise BackupError(f"{target} exists: restore goes into a new data directory")
    source = directory / SQLITE_FILE
    if not source.is_file():
        raise BackupError(f"{directory} holds no {SQLITE_FILE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".partial")
    shutil.copyfile(source, temp)
    os.replace(temp, target)


def _restore_postgres(directory: Path, url: str) -> None:
    engine = create_engine(_libpq_url(url).replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
    finally:
        engine.dispose()
    if tables:
        raise BackupError("the target database is not empty: restore goes into a new database")
    run = subprocess.run(
        [
            _pg_tool("pg_restore"),
            "--no-owner",
            "--exit-on-error",
            f"--dbname={_libpq_url(url)}",
            str(directory / PG_DUMP),
        ],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise BackupError(f"pg_restore failed: {run.stderr.strip()[-2000:]}")


def _restore_files(directory: Path, store: Path) -> tuple[int, int]:
    files = _read_files_tsv(directory / FILES)
    root = directory / "instances"
    size_total = 0
    for rel_path, (size, digest) in files.items():
        target = _inside(store, rel_path)
        actual = _copy_hashing(_inside(root, rel_path), target)
        if actual != digest:
            raise BackupError(f"{rel_path} in the backup has sha256 {actual}, recorded {digest}")
        size_total += size
    (store / ".tmp").mkdir(parents=True, exist_ok=True)
    return len(files), size_total


def _mark_missing_pruned(db: Database, missing: list[str], created_at: str) -> int:
    """Files gone between the snapshot and the copy: their rows say pruned, not a dangling path."""
    if not missing:
        return 0
    when = dt.datetime.fromisoformat(created_at)
    with db.session() as session:
        result = session.execute(
            update(Instance).where(Instance.rel_path.in_(missing)).values(pruned_at=when)
        )
        return int(result.rowcount or 0)
