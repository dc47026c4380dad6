"""The `mammo-node` command tree; each module of this package adds its commands to it."""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from mammo_node.errors import MammoNodeError


class NodeCommands(TyperGroup):
    """Answers a MammoNodeError that a command does not handle, once for every command, as
    they all answer it: ``error: ...`` on stderr and exit status 2 (no try/except needed)."""

    def invoke(self, ctx: click.Context) -> Any:
        from mammo_node.cli.common import _fail

        try:
            return super().invoke(ctx)
        except MammoNodeError as exc:
            raise _fail(exc) from exc


app = typer.Typer(
    cls=NodeCommands,
    no_args_is_help=True,
    add_completion=False,
    help="`mammo-node`: run the node and look after it.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
exams_app = typer.Typer(no_args_is_help=True, help="Exams the node holds.")
dest_app = typer.Typer(no_args_is_help=True, help="Where results are sent (PACS, workstations).")
outbox_app = typer.Typer(no_args_is_help=True, help="Deliveries of results: due, sent, dead.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail (who sent, sent, looked).")
app.add_typer(db_app, name="db")
app.add_typer(exams_app, name="exams")
app.add_typer(dest_app, name="destinations")
app.add_typer(outbox_app, name="outbox")
app.add_typer(audit_app, name="audit")
