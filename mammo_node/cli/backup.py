"""`mammo-node backup DIR` and `mammo-node restore DIR`: the database and the instance store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mammo_node.cli.app import app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, _settings, out

Folder = Annotated[Path, typer.Argument(help="backup folder (on another disk than the data)")]


@app.command("backup")
def backup(
    directory: Folder,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Back up the database and the instance files, consistent while the node runs.

    Run again into the same folder to copy only what is new (incremental)."""
    from mammo_node.operations.backup import backup as run_backup

    report = run_backup(_settings(data_dir=data_dir, db_url=db_url), directory)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    exams = sum(report.counts["exams"].values())
    out.print(
        f"backup of {report.database} at revision {report.revision} in {report.directory}: "
        f"{exams} exams, {report.counts['results']} results, {report.files} files "
        f"({report.bytes / 1024**2:.1f} MB; {report.copied} copied now, {report.removed} "
        f"dropped, {len(report.missing)} gone since the snapshot)"
    )


@app.command("restore")
def restore(
    directory: Folder,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore a backup into a NEW data directory (and, for PostgreSQL, a new empty database
    given with --db-url); every file is checked against its recorded sha256."""
    from mammo_node.operations.backup import restore as run_restore

    report = run_restore(directory, _settings(data_dir=data_dir, db_url=db_url))
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    exams = sum(report.counts["exams"].values())
    out.print(
        f"restored into {report.data_dir}: {exams} exams, {report.counts['results']} results, "
        f"{report.files} files ({report.bytes / 1024**2:.1f} MB) checked"
    )
