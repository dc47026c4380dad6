"""Run the node: `serve`, a `worker` alone, `db upgrade`."""

from __future__ import annotations

from typing import Annotated

import typer

from mammo_node.cli.app import app, db_app
from mammo_node.cli.common import DataDir, DbUrl, ModelBundle, _settings, out


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
    """Run a scoring worker alone (several may share one PostgreSQL database).

    As in `serve`, exams are scored in supervised child processes (`scoring_processes`) at a
    lower priority: a crash there costs the exam an attempt and the child is restarted."""
    import signal
    import threading

    from mammo_node.errors import ModelError
    from mammo_node.worker_process import WorkerSupervisor

    settings = _settings(data_dir=data_dir, db_url=db_url, model_bundle=model_bundle)
    # scoring_processes children, each with its own claims (a stable --id gets -2, -3, ...)
    supervisors = [
        WorkerSupervisor(
            settings,
            worker_id=f"{worker_id}-{i + 1}" if worker_id and i else worker_id,
            index=i,
        )
        for i in range(settings.scoring_processes)
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for supervisor in supervisors:
        supervisor.start()
    while any(s.is_alive() for s in supervisors) and not stop.wait(0.5):
        pass
    for supervisor in supervisors:
        supervisor.stop()
    for supervisor in supervisors:
        supervisor.join(timeout=settings.shutdown_grace_seconds)
    errors = [s.model_error for s in supervisors if s.model_error]
    if not stop.is_set() and errors:
        raise ModelError(f"the worker cannot load its model: {errors[0]}")


# --- db ----------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    revision: Annotated[str, typer.Argument()] = "head",
) -> None:
    """Apply schema migrations (creates the schema on an empty database)."""
    from mammo_node.db.session import current_revision, upgrade

    settings = _settings(data_dir=data_dir, db_url=db_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url, revision, storage_dir=settings.storage_dir)
    out.print(f"database at revision {current_revision(settings.database_url)}")
