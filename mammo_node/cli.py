"""`mammo-node`: run the node and look after it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mammo_node.config import Settings, load_settings
from mammo_node.errors import MammoNodeError
from mammo_node.web.cli import audit_app

if TYPE_CHECKING:
    from mammo_node.db.session import Database

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
exams_app = typer.Typer(no_args_is_help=True, help="Exams the node holds.")
dest_app = typer.Typer(no_args_is_help=True, help="Where results are sent (PACS, workstations).")
outbox_app = typer.Typer(no_args_is_help=True, help="Deliveries of results: due, sent, dead.")
app.add_typer(db_app, name="db")
app.add_typer(exams_app, name="exams")
app.add_typer(dest_app, name="destinations")
app.add_typer(outbox_app, name="outbox")
app.add_typer(audit_app, name="audit")

out = Console()
err = Console(stderr=True)
logger = logging.getLogger("mammo_node.cli")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory [env MAMMO_DATA_DIR]")
]
DbUrl = Annotated[str | None, typer.Option("--db-url", help="Database URL [env MAMMO_DB_URL]")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output")]
ModelBundle = Annotated[
    Path | None,
    typer.Option(
        "--model-bundle",
        help="Model bundle directory [MAMMO_MODEL_BUNDLE]; default: the packaged demo bundle",
    ),
]


def _settings(**overrides: Any) -> Settings:
    from mammo_node import logs

    settings = load_settings(**overrides)
    logs.configure(settings.log_level)
    return settings


def _database(data_dir: Path | None, db_url: str | None) -> Database:
    """The node's database, as the settings (flags, then MAMMO_ variables) name it."""
    from mammo_node.db.session import Database

    return Database(_settings(data_dir=data_dir, db_url=db_url).database_url)


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
    model_bundle: ModelBundle = None,
) -> None:
    """Receive, file, group, score and send back exams until SIGTERM / SIGINT."""
    from mammo_node.node import Node

    try:
        settings = _settings(
            data_dir=data_dir,
            db_url=db_url,
            ae_title=ae_title,
            port=port,
            http_port=http_port,
            host=host,
            model_bundle=model_bundle,
        )
        node = Node(settings)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    node.run_until_signalled()


@app.command()
def worker(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    model_bundle: ModelBundle = None,
    worker_id: Annotated[
        str | None, typer.Option("--id", help="Stable name of this worker")
    ] = None,
) -> None:
    """Run a scoring worker alone (several may share one PostgreSQL database)."""
    import signal
    import threading

    from mammo_node.db.session import Database
    from mammo_node.ingest import Ingestor
    from mammo_node.scoring import load_scorer
    from mammo_node.storage import InstanceStore
    from mammo_node.worker import Worker, WorkerThread

    try:
        settings = _settings(data_dir=data_dir, db_url=db_url, model_bundle=model_bundle)
        db = Database(settings.database_url)
        ingestor = Ingestor(settings, db, InstanceStore(settings.storage_dir))
        thread = WorkerThread(
            Worker(settings, db, ingestor, lambda: load_scorer(settings), worker_id=worker_id)
        )
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread.start()
    stop.wait()
    thread.stop()
    thread.join(timeout=5)


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


# --- data for tests, demos and benchmarks --------------------------------------------------
@app.command()
def synth(
    out_dir: Path,
    exams: Annotated[int, typer.Option("--exams", min=0)] = 10,
    rows: Annotated[int, typer.Option("--rows", help="Image height (4096 / 2294 full size)")] = 512,
    columns: Annotated[int, typer.Option("--columns", help="Image width (3328 / 1914)")] = 416,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    screening_fraction: Annotated[float, typer.Option("--screening-fraction")] = 0.3,
    interval_fraction: Annotated[float, typer.Option("--interval-fraction")] = 0.1,
    lesion_contrast: Annotated[float, typer.Option("--lesion-contrast")] = 0.25,
    lesion_radius_mm: Annotated[
        tuple[float, float], typer.Option("--lesion-radius-mm", help="MIN MAX radius of masses")
    ] = (6.0, 12.0),
) -> None:
    """Synthetic screening exams (MG For Presentation) + labels.csv + truth.csv (lesions)."""
    from mammo_node.synth import SynthOptions, write_synthetic_dataset

    try:
        options = SynthOptions(
            rows=rows,
            columns=columns,
            exams=exams,
            seed=seed,
            screening_fraction=screening_fraction,
            interval_fraction=interval_fraction,
            lesion_contrast=lesion_contrast,
        )
        summary = write_synthetic_dataset(out_dir, options)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    outcomes = ", ".join(f"{n} {k}" for k, n in summary.outcomes.items())
    out.print(
        f"{summary.exams} exams ({summary.images} images, {summary.patients} patients: "
        f"{outcomes}) in {out_dir} [{summary.seconds:.1f} s]\n"
        f"labels: {summary.labels_csv}\nlesions: {summary.truth_csv}"
    )


@app.command()
def wrap(
    source: Annotated[str, typer.Argument(help="nyu or mias")],
    src_dir: Path,
    out_dir: Path,
) -> None:
    """Wrap the real PNG/PGM mammograms of ../shared/realdata into DICOM for sending.

    Lesion centres known for the source go to OUT_DIR/truth.csv (stored-pixel coordinates).
    """
    import csv
    from dataclasses import asdict

    from mammo_node import wrap as wrapping

    try:
        if source == "nyu":
            datasets = wrapping.wrap_nyu_exam(src_dir)
            truth = wrapping.nyu_lesion_truth(src_dir, datasets)
        elif source == "mias":
            pairs = wrapping.wrap_mias(src_dir)
            datasets = [ds for ds, _ in pairs]
            truth = [t for _, lesions in pairs for t in lesions]
        else:
            raise MammoNodeError(f'source should be "nyu" or "mias", got {source!r}')
        files = wrapping.write_datasets(datasets, out_dir)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if truth:
        rows = [asdict(t) for t in truth]
        with (out_dir / "truth.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    out.print(f"wrote {len(files)} DICOM file(s) and {len(truth)} lesion(s) to {out_dir}")


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
    from mammo_node.exams import list_exams

    try:
        exams = list_exams(_database(data_dir, db_url), state=state, limit=limit)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(exams, indent=2))
        return
    table = Table("study", "state", "images", "last image", "reason")
    for exam in exams:
        table.add_row(
            exam["study_uid"],
            exam["state"],
            str(exam["images"]),
            (exam["last_received_at"] or "")[:19],
            exam["reason"],
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
    from mammo_node.exams import exam_detail

    try:
        detail = exam_detail(_database(data_dir, db_url), study_uid)
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
    result = detail.get("result")
    if result:
        _print_result(result)


def _print_result(result: dict[str, Any]) -> None:
    model = result["model"]
    demo = " (DEMO, not for clinical use)" if model["demo"] else ""
    breasts = ", ".join(f"{lat} {score:.3f}" for lat, score in result["breast_scores"].items())
    verdicts = ", ".join(
        f"{name}: {'yes' if hit else 'no'}" for name, hit in result["verdicts"].items()
    )
    out.print(
        f"result {result['id']} by {model['name']} {model['version']}{demo}: exam score "
        f"{result['exam_score']:.3f} ({result['score_kind']}); breasts {breasts}"
        + (f"; recall at {verdicts}" if verdicts else "")
        + ("" if result["current"] else "  [an image arrived since: a new result is due]")
    )
    views = Table("view", "holistic", "attention", "ensemble", "COA (x, y)", "ROI x0,y0,x1,y1")
    for image in sorted(result["images"].values(), key=lambda i: str(i["slot"])):
        views.add_row(
            image["slot"],
            f"{image['holistic']:.3f}",
            f"{image['attention']:.3f}",
            f"{image['ensemble']:.3f}",
            f"{image['coa'][0]:.0f}, {image['coa'][1]:.0f}",
            ",".join(str(v) for v in image["roi"]),
        )
    out.print(views)
    states: dict[tuple[str, str], int] = {}
    for delivery in result["deliveries"]:
        key = (delivery["destination"], delivery["state"])
        states[key] = states.get(key, 0) + 1
    for (destination, state), count in sorted(states.items()):
        out.print(f"  {count} output(s) {state} to {destination}")


@exams_app.command("rescore")
def exams_rescore(
    study_uid: str,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Queue an exam for a new result; its SR will name the previous one."""
    from mammo_node.worker import rescore

    try:
        revision = rescore(_database(data_dir, db_url), study_uid)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    out.print(f"exam {study_uid} queued for scoring (revision {revision})")


# --- destinations ------------------------------------------------------------------------
@dest_app.command("add")
def destinations_add(
    name: str,
    ae_title: Annotated[str, typer.Option("--ae-title")],
    host: Annotated[str, typer.Option("--host")],
    port: Annotated[int, typer.Option("--port")],
    tls: Annotated[bool, typer.Option("--tls/--no-tls")] = False,
    only_own_exams: Annotated[
        bool,
        typer.Option(
            "--only-own-exams",
            help="Only results of exams this AE sent (return to sender), not every result",
        ),
    ] = False,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Add (or update) a destination results are sent to."""
    from mammo_node.destinations import add_destination

    try:
        created = add_destination(
            _database(data_dir, db_url),
            name,
            ae_title=ae_title,
            host=host,
            port=port,
            tls=tls,
            send_all=not only_own_exams,
        )
    except (MammoNodeError, ValueError) as exc:
        raise _fail(exc) from exc
    out.print(f"destination {name} {'added' if created else 'updated'}: {ae_title}@{host}:{port}")


@dest_app.command("list")
def destinations_list(
    data_dir: DataDir = None, db_url: DbUrl = None, as_json: JsonFlag = False
) -> None:
    """Destinations and their state."""
    from mammo_node.destinations import list_destinations

    try:
        rows = list_destinations(_database(data_dir, db_url))
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "AE@host:port", "TLS", "sends", "pending", "dead", "problem")
    for d in rows:
        table.add_row(
            d["name"],
            f"{d['ae_title']}@{d['host']}:{d['port']}",
            "yes" if d["tls"] else "no",
            "all" if d["send_all"] else "own exams",
            str(d["pending"]),
            str(d["dead"]),
            d["config_error"],
        )
    out.print(table)


@dest_app.command("remove")
def destinations_remove(name: str, data_dir: DataDir = None, db_url: DbUrl = None) -> None:
    """Remove a destination (its delivery history stays; pending deliveries are dropped)."""
    from mammo_node.destinations import remove_destination

    try:
        remove_destination(_database(data_dir, db_url), name)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    out.print(f"destination {name} removed")


# --- outbox ------------------------------------------------------------------------------
@outbox_app.command("list")
def outbox_list(
    state: Annotated[str | None, typer.Option("--state", help="pending, delivered, dead")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 200,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Deliveries, newest first (dead letters with --state dead)."""
    from mammo_node.destinations import list_outbox

    try:
        rows = list_outbox(_database(data_dir, db_url), state=state, limit=limit)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "destination", "output", "state", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["destination"],
            f"{r['output']} {r['sop_instance_uid']}",
            r["state"],
            str(r["attempts"]),
            r["last_error"],
        )
    out.print(table)


@outbox_app.command("retry")
def outbox_retry(
    item: Annotated[int | None, typer.Argument(help="One outbox id; default all dead")] = None,
    destination: Annotated[str | None, typer.Option("--destination")] = None,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Re-queue dead letters (and clear a destination's rejected-association pause)."""
    from mammo_node.exporter import retry

    try:
        count = retry(_database(data_dir, db_url), destination=destination, item_id=item)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    out.print(f"{count} deliver{'y' if count == 1 else 'ies'} re-queued")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
