"""`mammo-node doctor [--json]`: is the node healthy? A table, and exit 1 when it is not."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from mammo_node.cli.app import app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, ModelBundle, out
from mammo_node.errors import ConfigError

STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@app.command("doctor")
def doctor(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    model_bundle: ModelBundle = None,
    as_json: JsonFlag = False,
) -> None:
    """Settings, database and migrations, free disk, model bundle (sha256, loads), C-ECHO to
    every destination, TLS certificate expiry, ports. Exit status 1 when a check fails."""
    from mammo_node import logs
    from mammo_node.config import load_settings
    from mammo_node.operations.doctor import Check, Status, healthy, run_checks

    try:
        settings = load_settings(data_dir=data_dir, db_url=db_url, model_bundle=model_bundle)
        logs.configure("WARNING" if settings.log_level.upper() == "INFO" else settings.log_level)
        rows = run_checks(settings)
    except ConfigError as exc:
        rows = [Check("settings", Status.FAIL, str(exc))]
    if as_json:
        typer.echo(
            json.dumps({"healthy": healthy(rows), "checks": [r.to_json() for r in rows]}, indent=2)
        )
    else:
        table = Table("check", "status", "detail")
        for row in rows:
            table.add_row(row.name, f"[{STYLE[row.status.value]}]{row.status.value}[/]", row.detail)
        out.print(table)
    if not healthy(rows):
        raise typer.Exit(1)
