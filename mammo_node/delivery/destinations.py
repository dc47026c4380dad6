"""Destinations and the outbox as an operator manages them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from mammo_node.db.models import Destination, Instance, OutboxItem
from mammo_node.db.session import Database
from mammo_node.domain import OutboxState
from mammo_node.errors import MammoNodeError
from mammo_node.responses import Delivery, DestinationInfo
from mammo_node.writers.identity import DEFAULT_DESTINATION_OUTPUTS, parse_destination_outputs


def add_destination(
    db: Database,
    name: str,
    *,
    ae_title: str,
    host: str,
    port: int,
    tls: bool = False,
    send_all: bool = True,
    outputs: str = DEFAULT_DESTINATION_OUTPUTS,
    cad_operating_point: str = "",
) -> bool:
    """Add or update; returns True when created. Clears a previous configuration error.

    ``outputs`` lists the result objects it gets (``tid1500,sc,seg,cad-sr,gsps``)."""
    kinds = ",".join(parse_destination_outputs(outputs))
    ae_title = ae_title.strip()
    if not ae_title or len(ae_title) > 16:
        raise ValueError(f'Argument "ae_title" should be 1-16 characters, got {ae_title!r}.')
    if not 0 < port < 65536:
        raise ValueError(f'Argument "port" should be 1-65535, got {port}.')
    with db.session() as session:
        row = session.scalars(select(Destination).where(Destination.name == name)).first()
        created = row is None
        if row is None:
            row = Destination(name=name)
            session.add(row)
        row.ae_title, row.host, row.port, row.tls = ae_title, host, port, tls
        row.send_all, row.enabled, row.config_error = send_all, True, ""
        row.outputs = kinds
        row.cad_operating_point = cad_operating_point.strip()[:64]
        return created


def set_destination_outputs(
    db: Database,
    name: str,
    outputs: str | None = None,
    *,
    cad_operating_point: str | None = None,
) -> str:
    """Change which result objects a destination gets from now on (and the operating point of
    its CAD SR, "" = the bundle's first); returns the outputs list."""
    kinds = ",".join(parse_destination_outputs(outputs)) if outputs is not None else None
    with db.session() as session:
        row = session.scalars(
            select(Destination).where(Destination.name == name, Destination.enabled)
        ).first()
        if row is None:
            raise MammoNodeError(f"no destination named {name!r}")
        if kinds is not None:
            row.outputs = kinds
        if cad_operating_point is not None:
            row.cad_operating_point = cad_operating_point.strip()[:64]
        return row.outputs


def remove_destination(db: Database, name: str) -> None:
    with db.session() as session:
        row = session.scalars(select(Destination).where(Destination.name == name)).first()
        if row is None:
            raise MammoNodeError(f"no destination named {name!r}")
        delivered = session.scalar(
            select(func.count()).where(
                OutboxItem.destination_fk == row.id, OutboxItem.state == OutboxState.DELIVERED
            )
        )
        session.execute(
            delete(OutboxItem).where(
                OutboxItem.destination_fk == row.id, OutboxItem.state != OutboxState.DELIVERED
            )
        )
        if delivered:
            row.enabled = False  # keep the delivery history: disable instead of delete
            row.name = f"{row.name} (removed {row.id})"[:64]
        else:
            session.delete(row)


def list_destinations(db: Database) -> list[DestinationInfo]:
    with db.read() as session:

        def rows_per_destination(*where: Any) -> dict[int, int]:
            query = select(OutboxItem.destination_fk, func.count()).where(*where)
            return dict(session.execute(query.group_by(OutboxItem.destination_fk)).all())

        pending = rows_per_destination(OutboxItem.state == OutboxState.PENDING)
        dead = rows_per_destination(OutboxItem.state == OutboxState.DEAD)
        doubtful = rows_per_destination(
            OutboxItem.state == OutboxState.PENDING, OutboxItem.in_doubt
        )
        return [
            DestinationInfo.of(d, pending.get(d.id, 0), dead.get(d.id, 0), doubtful.get(d.id, 0))
            for d in session.scalars(
                select(Destination).where(Destination.enabled).order_by(Destination.name)
            )
        ]


def list_outbox(db: Database, *, state: str | None = None, limit: int = 200) -> list[Delivery]:
    with db.read() as session:
        query = (
            select(OutboxItem, Destination.name, Instance.sop_instance_uid, Instance.output_kind)
            .join(Destination, OutboxItem.destination_fk == Destination.id)
            .join(Instance, OutboxItem.instance_fk == Instance.id)
            .order_by(OutboxItem.id.desc())
            .limit(limit)
        )
        if state:
            query = query.where(OutboxItem.state == state)
        return [
            Delivery.of(item, name, uid, kind)
            for item, name, uid, kind in session.execute(query).all()
        ]
