"""`destinations` and `outbox`: where results go and how their delivery stands."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mammo_node.errors import MammoNodeError

if TYPE_CHECKING:
    pass
from mammo_node.cli.app import dest_app, outbox_app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, _database, _fail, out


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
    outputs: Annotated[
        str,
        typer.Option(
            "--outputs",
            help="Result objects it gets, comma-separated: tid1500 (exam + view reports), sc, "
            "seg, cad-sr (Mammography CAD SR), gsps (presentation state)",
        ),
    ] = "tid1500,sc,seg",
    operating_point: Annotated[
        str,
        typer.Option(
            "--operating-point",
            help="CAD SR: marks above this bundle operating point are 'presentation required' "
            "(default: the bundle's first)",
        ),
    ] = "",
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Add (or update) a destination results are sent to."""
    from mammo_node.delivery.destinations import add_destination

    try:
        created = add_destination(
            _database(data_dir, db_url),
            name,
            ae_title=ae_title,
            host=host,
            port=port,
            tls=tls,
            send_all=not only_own_exams,
            outputs=outputs,
            cad_operating_point=operating_point,
        )
    except (MammoNodeError, ValueError) as exc:
        raise _fail(exc) from exc
    out.print(f"destination {name} {'added' if created else 'updated'}: {ae_title}@{host}:{port}")


@dest_app.command("set")
def destinations_set(
    name: str,
    outputs: Annotated[
        str | None, typer.Option("--outputs", help="e.g. tid1500,sc,seg or cad-sr,gsps")
    ] = None,
    operating_point: Annotated[
        str | None,
        typer.Option("--operating-point", help="CAD SR operating point ('' = bundle's first)"),
    ] = None,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Change which result objects a destination gets (results scored from now on)."""
    from mammo_node.delivery.destinations import set_destination_outputs

    try:
        kinds = set_destination_outputs(
            _database(data_dir, db_url), name, outputs, cad_operating_point=operating_point
        )
    except (MammoNodeError, ValueError) as exc:
        raise _fail(exc) from exc
    out.print(f"destination {name} now gets: {kinds}")


@dest_app.command("list")
def destinations_list(
    data_dir: DataDir = None, db_url: DbUrl = None, as_json: JsonFlag = False
) -> None:
    """Destinations and their state."""
    from mammo_node.delivery.destinations import list_destinations

    rows = list_destinations(_database(data_dir, db_url))
    if as_json:
        typer.echo(json.dumps([d.to_json() for d in rows], indent=2))
        return
    table = Table(
        "name", "AE@host:port", "TLS", "sends", "outputs", "pending", "in doubt", "dead", "problem"
    )
    for d in rows:
        table.add_row(
            d.name,
            f"{d.ae_title}@{d.host}:{d.port}",
            "yes" if d.tls else "no",
            "all" if d.send_all else "own exams",
            ",".join(d.outputs) + (f" @{d.cad_operating_point}" if d.cad_operating_point else ""),
            str(d.pending),
            str(d.in_doubt),
            str(d.dead),
            d.config_error,
        )
    out.print(table)


@dest_app.command("remove")
def destinations_remove(name: str, data_dir: DataDir = None, db_url: DbUrl = None) -> None:
    """Remove a destination (its delivery history stays; pending deliveries are dropped)."""
    from mammo_node.delivery.destinations import remove_destination

    remove_destination(_database(data_dir, db_url), name)
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
    from mammo_node.delivery.destinations import list_outbox

    rows = list_outbox(_database(data_dir, db_url), state=state, limit=limit)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table("id", "destination", "output", "state", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r.id),
            r.destination,
            f"{r.output} {r.sop_instance_uid}",
            r.state,
            str(r.attempts),
            r.last_error,
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
    from mammo_node.delivery.exporter import retry

    count = retry(_database(data_dir, db_url), destination=destination, item_id=item)
    out.print(f"{count} deliver{'y' if count == 1 else 'ies'} re-queued")
