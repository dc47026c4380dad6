"""What every `mammo-node` command shares: the options, the consoles, settings and database."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from mammo_node.config import Settings, load_settings

if TYPE_CHECKING:
    from mammo_node.db.session import Database

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
    # one unbroken line (a path stays copyable) and the text as written, not read as markup
    err.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
    return typer.Exit(2)
