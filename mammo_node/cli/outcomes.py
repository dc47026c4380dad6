"""`mammo-node outcomes import CSV` and `mammo-node export-training DIR`: screening outcomes
in, the node's own exams out as the trainer's dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mammo_node.cli.app import app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, _settings, out

outcomes_app = typer.Typer(no_args_is_help=True, help="Screening outcomes linked to exams.")
app.add_typer(outcomes_app, name="outcomes")


@outcomes_app.command("import")
def import_csv(
    csv_file: Annotated[
        Path, typer.Argument(help="study_uid|accession_number, outcome, cancer_laterality")
    ],
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Link screening outcomes (screening / interval cancer, normal; laterality) to exams.

    A file with an invalid row is refused whole; importing again updates the outcomes."""
    from mammo_node.db.session import Database
    from mammo_node.operations.outcomes import import_outcomes

    settings = _settings(data_dir=data_dir, db_url=db_url)
    db = Database(settings.database_url)
    try:
        report = import_outcomes(db, csv_file)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    out.print(
        f"{report.rows} row(s): {report.imported} imported, {report.updated} updated, "
        f"{len(report.not_on_this_node)} not on this node"
    )
    for line in report.not_on_this_node[:20]:
        out.print(f"  not on this node: {line}")


@app.command("export-training")
def export_training(
    directory: Annotated[
        Path, typer.Argument(help="new folder for images, labels.csv, manifest.json")
    ],
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Write the exams that have outcomes as a `mammo-train` dataset: the four scored images
    of each exam, labels.csv and manifest.json (`mammo-train cv DIR/manifest.json`)."""
    from mammo_node.db.session import Database
    from mammo_node.operations.outcomes import export_training as run_export

    settings = _settings(data_dir=data_dir, db_url=db_url)
    db = Database(settings.database_url)
    try:
        report = run_export(db, settings.storage_dir.resolve(), directory)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    out.print(
        f"{report.exams} exam(s), {report.images} images in {report.directory} "
        f"({len(report.excluded)} left out); next: mammo-train cv {report.directory}/manifest.json"
    )
