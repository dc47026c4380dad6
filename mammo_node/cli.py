"""`mammo-node`: run the node and look after it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mammo_node.config import Settings, load_settings
from mammo_node.errors import MammoNodeError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
exams_app = typer.Typer(no_args_is_help=True, help="Exams the node holds.")
app.add_typer(db_app, name="db")
app.add_typer(exams_app, name="exams")

out = Console()
err = Console(stderr=True)
logger = logging.getLogger("mammo_node.cli")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory [env MAMMO_DATA_DIR]")
]
DbUrl = Annotated[str | None, typer.Option("--db-url", help="Database URL [env MAMMO_DB_URL]")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output")]


def _settings(**overrides: Any) -> Settings:
    from mammo_node import logs

    settings = load_settings(**overrides)
    logs.configure(settings.log_level)
    return settings


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


# --- serve -------------------------------------------------------------------------------
@app.command()
def serve(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="[MAMMO_AE_TITLE]")] = None,
    port: Annotated[int | None, typer.Option("--port", help="DICOM port [MAMMO_PORT]")] = None,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="HTTP port [MAMMO_HTTP_PORT]")
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address [MAMMO_HOST]")] = None,
) -> None:
    """Receive, file, group (and score) exams until SIGTERM / SIGINT."""
    from mammo_node.node import Node

    try:
        settings = _settings(
            data_dir=data_dir, db_url=db_url, ae_title=ae_title, port=port,
            http_port=http_port, host=host,
        )
        node = Node(settings)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    node.run_until_signalled()


# --- db ----------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    revision: Annotated[str, typer.Argument()] = "head",
) -> None:
    """Apply schema migrations (creates the schema on an empty database)."""
    from mammo_node.db.session import current_revision, upgrade

    try:
        settings = _settings(data_dir=data_dir, db_url=db_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url, revision)
        out.print(f"database at revision {current_revision(settings.database_url)}")
    except MammoNodeError as exc:
        raise _fail(exc) from exc


# --- network tools -----------------------------------------------------------------------
@app.command()
def echo(
    host: str,
    port: int,
    called_ae: Annotated[str, typer.Option("--called-ae", "-aec")] = "ANY-SCP",
    calling_ae: Annotated[str, typer.Option("--calling-ae", "-aet")] = "MAMMO_NODE",
) -> None:
    """C-ECHO a DICOM peer."""
    from mammo_node.dimse.scu import Peer
    from mammo_node.dimse.scu import echo as c_echo

    try:
        status = c_echo(Peer(host, port, called_ae, calling_ae))
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    out.print(f"C-ECHO {called_ae}@{host}:{port}: status 0x{status:04X}")
    raise typer.Exit(0 if status == 0 else 1)


@app.command()
def send(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders")],
    to: Annotated[str, typer.Option("--to", help="HOST:PORT")],
    called_ae: Annotated[str, typer.Option("--called-ae", "-aec")] = "MAMMO_NODE",
    calling_ae: Annotated[str, typer.Option("--calling-ae", "-aet")] = "MAMMO_SEND",
    associations: Annotated[int, typer.Option("--associations", "-j", min=1)] = 1,
) -> None:
    """C-STORE files (folders are searched recursively) to a DICOM peer."""
    from mammo_node.dimse.scu import Peer, parse_address, send_parallel

    files = _dicom_files(paths)
    try:
        host, port = parse_address(to)
        report = send_parallel(files, Peer(host, port, called_ae, calling_ae), associations)
    except (MammoNodeError, ValueError) as exc:
        raise _fail(exc) from exc
    if report.rejected:
        raise _fail(MammoNodeError(report.rejected))
    for outcome in report.failed:
        status = "no response" if outcome.status is None else f"0x{outcome.status:04X}"
        err.print(f"failed {outcome.path}: {status} {outcome.comment}")
    out.print(f"sent {report.delivered} of {len(files)} file(s) to {called_ae}@{to}")
    raise typer.Exit(0 if report.delivered == len(files) else 1)


def _dicom_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and _is_part10(p)))
        elif path.is_file():
            files.append(path)
        else:
            raise _fail(MammoNodeError(f"{path} does not exist"))
    return files


def _is_part10(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


# --- exams -------------------------------------------------------------------------------
@exams_app.command("list")
def exams_list(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Exams, most recent first."""
    from mammo_node.db.session import Database
    from mammo_node.exams import list_exams

    try:
        settings = _settings(data_dir=data_dir, db_url=db_url)
        exams = list_exams(Database(settings.database_url), state=state, limit=limit)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(exams, indent=2))
        return
    table = Table("study", "state", "images", "last image", "reason")
    for exam in exams:
        table.add_row(
            exam["study_uid"], exam["state"], str(exam["images"]),
            (exam["last_received_at"] or "")[:19], exam["reason"],
        )
    out.print(table)


@exams_app.command("show")
def exams_show(
    study_uid: str,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """One exam: state, which image fills each view, images kept out and why."""
    from mammo_node.db.session import Database
    from mammo_node.exams import exam_detail

    try:
        settings = _settings(data_dir=data_dir, db_url=db_url)
        detail = exam_detail(Database(settings.database_url), study_uid)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(detail, indent=2))
        return
    out.print(f"[bold]{detail['study_uid']}[/bold]  {detail['state']}  {detail['reason']}")
    slots = Table("view", "SOP Instance UID")
    for slot, uid in detail["slots"].items():
        slots.add_row(slot, uid or "[red]missing[/red]")
    out.print(slots)
    if detail["not_scored"]:
        kept = Table("not scored", "reason", "detail")
        for item in detail["not_scored"]:
            kept.add_row(item["sop_instance_uid"], item["reason"], item["detail"])
        out.print(kept)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
