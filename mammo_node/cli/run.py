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

    As in `serve`, exams are scored in a supervised child process at a lower priority: a
    crash there costs the exam an attempt and the child is restarted."""
    import signal
    import threading

    from mammo_node.errors import ModelError
    from mammo_node.worker_process import WorkerSupervisor

    settings = _settings(data_dir=data_dir, db_url=db_url, model_bundle=model_bundle)
    supervisor = WorkerSupervisor(settings, worker_id=worker_id)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    supervisor.start()
    while supervisor.is_alive() and not stop.wait(0.5):
        pass
    supervisor.stop()
    supervisor.join(timeout=settings.shutdown_grace_seconds)
    if not stop.is_set() and supervisor.model_error:
        raise ModelError(f"the worker cannot load its model: {supervisor.model_error}")


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
