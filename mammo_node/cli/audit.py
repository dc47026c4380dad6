"""`mammo-node audit export`: the audit trail as JSON lines."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from mammo_node.cli.app import audit_app
from mammo_node.errors import MammoNodeError


@audit_app.callback()
def audit_group() -> None:
    """The audit trail: who sent what, what was sent where, who looked at which exam."""


def _when(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{name} {value!r}: expected an ISO date or time such as 2026-11-25 or "
            "2026-11-25T08:00+01:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@audit_app.command("export")
def export(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory [env MAMMO_DATA_DIR]")
    ] = None,
    db_url: Annotated[
        str | None, typer.Option("--db-url", help="Database URL [env MAMMO_DB_URL]")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="from this time (ISO)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="before this time (ISO)")] = None,
    action: Annotated[str | None, typer.Option("--action", help="only this action")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="only this actor")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
) -> None:
    """Audit events as JSON lines (id, at, actor, action, target, detail), oldest first."""
    from mammo_node import logs
    from mammo_node.config import load_settings
    from mammo_node.db.session import Database
    from mammo_node.observe.audit import export_jsonl

    filters = {
        "since": _when(since, "--since"),
        "until": _when(until, "--until"),
        "action": action,
        "actor": actor,
    }
    try:
        settings = load_settings(data_dir=data_dir, db_url=db_url)
        logs.configure(settings.log_level)
        db = Database(settings.database_url)
        try:
            if output is None:
                count = export_jsonl(db, sys.stdout, **filters)
            else:
                with output.open("w", encoding="utf-8") as fh:
                    count = export_jsonl(db, fh, **filters)
        finally:
            db.dispose()
    except (MammoNodeError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"exported {count} audit event(s)", err=True)
