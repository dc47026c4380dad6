"""`mammo-node storage status|prune|hold|release`: what the store holds and retention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mammo_node.cli.app import app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, _fail, _settings, out
from mammo_node.errors import MammoNodeError

if TYPE_CHECKING:
    from mammo_node.config import Settings
    from mammo_node.db.session import Database
    from mammo_node.filing.storage import InstanceStore

storage_app = typer.Typer(no_args_is_help=True, help="The instance store and its retention.")
app.add_typer(storage_app, name="storage")

RetentionDays = Annotated[
    float | None,
    typer.Option("--retention-days", help="days kept after delivery [MAMMO_RETENTION_DAYS]"),
]
MaxStorageGb = Annotated[
    float | None,
    typer.Option("--max-storage-gb", help="recycle above this [MAMMO_MAX_STORAGE_GB]"),
]


def _gb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024**3:.3f} GB"


def _open(settings: Settings) -> tuple[Database, InstanceStore]:
    from mammo_node.db.session import Database
    from mammo_node.filing.storage import InstanceStore

    return Database(settings.database_url), InstanceStore(settings.storage_dir)


@storage_app.command("status")
def status(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    retention_days: RetentionDays = None,
    max_storage_gb: MaxStorageGb = None,
    as_json: JsonFlag = False,
) -> None:
    """Bytes stored (received images, the node's outputs), pruned, and eligible for pruning."""
    from mammo_node.operations.retention import RetentionPolicy, storage_status

    settings = _settings(
        data_dir=data_dir,
        db_url=db_url,
        retention_days=retention_days,
        max_storage_gb=max_storage_gb,
    )
    db, store = _open(settings)
    try:
        report = storage_status(db, store, RetentionPolicy.from_settings(settings))
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    policy = report.policy
    table = Table("", "value")
    table.add_row("stored", f"{_gb(report.stored_bytes)} in {report.stored_instances} instances")
    table.add_row("  received images", _gb(report.source_bytes))
    table.add_row("  node outputs", _gb(report.output_bytes))
    table.add_row("pruned", f"{_gb(report.pruned_bytes)} in {report.pruned_instances} instances")
    table.add_row("exams eligible for pruning", str(report.exams_eligible))
    table.add_row("exams on hold", str(report.exams_held))
    table.add_row("free disk", _gb(report.free_disk_bytes))
    table.add_row(
        "retention days", "off" if policy.retention_days is None else str(policy.retention_days)
    )
    table.add_row(
        "max storage", "off" if policy.max_storage_bytes is None else _gb(policy.max_storage_bytes)
    )
    table.add_row("output days", "keep" if policy.output_days is None else str(policy.output_days))
    out.print(table)


@storage_app.command("prune")
def prune(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    retention_days: RetentionDays = None,
    max_storage_gb: MaxStorageGb = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be deleted, delete nothing")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete the images of fully-delivered exams past the limits, oldest delivery first."""
    from mammo_node.operations.retention import RetentionPolicy
    from mammo_node.operations.retention import prune as run_prune

    settings = _settings(
        data_dir=data_dir,
        db_url=db_url,
        retention_days=retention_days,
        max_storage_gb=max_storage_gb,
    )
    policy = RetentionPolicy.from_settings(settings)
    if not policy.active:
        raise _fail(
            MammoNodeError(
                "no retention limit set: give --retention-days or --max-storage-gb "
                "(or MAMMO_RETENTION_DAYS / MAMMO_MAX_STORAGE_GB)"
            )
        )
    db, store = _open(settings)
    try:
        report = run_prune(
            db,
            store,
            policy,
            dry_run=dry_run,
            view_cache=settings.data_dir / "cache" / "views",
        )
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    verb = "would free" if dry_run else "freed"
    table = Table("study", "reason", "delivered", "instances", "bytes")
    for exam in report.exams:
        table.add_row(
            exam.study_uid,
            exam.reason,
            exam.delivered_at.isoformat()[:19],
            str(exam.source_instances + exam.output_instances),
            str(exam.bytes),
        )
    if report.exams:
        out.print(table)
    out.print(
        f"{verb} {_gb(report.freed_bytes)} ({report.freed_instances} instances, "
        f"{len(report.exams)} exams); stored {_gb(report.stored_bytes_before)} -> "
        f"{_gb(report.stored_bytes_after)}"
    )


@storage_app.command("hold")
def hold(
    study_uid: str,
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")] = "",
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Keep an exam's images whatever the retention limits say (a case under review)."""
    _set_hold(study_uid, True, reason, data_dir, db_url)
    out.print(f"exam {study_uid} on retention hold")


@storage_app.command("release")
def release(study_uid: str, data_dir: DataDir = None, db_url: DbUrl = None) -> None:
    """Let retention prune an exam again."""
    _set_hold(study_uid, False, "", data_dir, db_url)
    out.print(f"exam {study_uid} released from retention hold")


def _set_hold(
    study_uid: str, held: bool, reason: str, data_dir: Path | None, db_url: str | None
) -> None:
    from mammo_node.operations.retention import set_hold

    settings = _settings(data_dir=data_dir, db_url=db_url)
    db, _store = _open(settings)
    try:
        set_hold(db, study_uid, held, reason)
    finally:
        db.dispose()
