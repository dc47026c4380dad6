"""`mammo-node models list|add|activate|shadow|remove|compare`: bundles side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mammo_node.cli.app import app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, _settings, out

if TYPE_CHECKING:
    from mammo_node.config import Settings
    from mammo_node.db.session import Database

models_app = typer.Typer(no_args_is_help=True, help="Model bundles: active, shadow, installed.")
app.add_typer(models_app, name="models")
Key = Annotated[str, typer.Argument(help="NAME:VERSION, NAME, or a sha256 prefix")]


def _db(data_dir: Path | None, db_url: str | None) -> tuple[Settings, Database]:
    from mammo_node.db.session import Database

    settings = _settings(data_dir=data_dir, db_url=db_url)
    return settings, Database(settings.database_url)


@models_app.command("list")
def list_models(data_dir: DataDir = None, db_url: DbUrl = None, as_json: JsonFlag = False) -> None:
    """Installed bundles and their roles."""
    from mammo_node.operations.models import list_bundles

    _s, db = _db(data_dir, db_url)
    bundles = list_bundles(db)
    db.dispose()
    if as_json:
        typer.echo(json.dumps([b.to_json() for b in bundles], indent=2))
        return
    table = Table("name", "version", "role", "sha256", "added")
    for b in bundles:
        table.add_row(b.name, b.version, b.role, b.manifest_sha256[:16], b.added_at[:19])
    out.print(table if bundles else "no bundles installed: the node scores with MAMMO_MODEL_BUNDLE")


@models_app.command("add")
def add(
    bundle: Annotated[Path, typer.Argument(help="bundle directory (from mammo-train export)")],
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify a bundle (sha256, weights load) and install a copy of it."""
    from mammo_node.operations.models import add_bundle

    settings, db = _db(data_dir, db_url)
    installed = add_bundle(settings, db, bundle)
    db.dispose()
    if as_json:
        typer.echo(json.dumps(installed.to_json(), indent=2))
        return
    out.print(f"installed {installed.name}:{installed.version} ({installed.manifest_sha256[:16]})")


def _role(key: str, role: str, data_dir: Path | None, db_url: str | None) -> None:
    from mammo_node.operations.models import ModelRole, set_role

    _s, db = _db(data_dir, db_url)
    changed = set_role(db, key, ModelRole(role))
    db.dispose()
    out.print(
        f"{changed.name}:{changed.version} is now {role} (running nodes follow within seconds)"
    )


@models_app.command("activate")
def activate(key: Key, data_dir: DataDir = None, db_url: DbUrl = None) -> None:
    """Score and send with this bundle from the next exam on (also the way to roll back)."""
    _role(key, "active", data_dir, db_url)


@models_app.command("shadow")
def shadow(
    key: Annotated[str | None, typer.Argument(help="NAME:VERSION, NAME or sha256 prefix")] = None,
    off: Annotated[bool, typer.Option("--off", help="stop shadow scoring")] = False,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Score every exam with this bundle too, keeping its scores beside the active ones
    without sending anything."""
    from mammo_node.operations.models import clear_shadow

    if off:
        _s, db = _db(data_dir, db_url)
        clear_shadow(db)
        db.dispose()
        out.print("shadow scoring off")
        return
    if key is None:
        raise typer.BadParameter("give a bundle, or --off")
    _role(key, "shadow", data_dir, db_url)


@models_app.command("remove")
def remove(key: Key, data_dir: DataDir = None, db_url: DbUrl = None) -> None:
    """Uninstall a bundle that is not active (its results keep its name, version and hash)."""
    from mammo_node.operations.models import remove_bundle

    _s, db = _db(data_dir, db_url)
    removed = remove_bundle(db, key)
    db.dispose()
    out.print(f"removed {removed.name}:{removed.version}")


@models_app.command("compare")
def compare(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    limit: Annotated[int, typer.Option("--limit")] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Shadow scores beside the active scores of the same exams, newest first."""
    from mammo_node.operations.models import compare as run_compare

    _s, db = _db(data_dir, db_url)
    rows = run_compare(db, limit)
    db.dispose()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("study", "active", "score", "shadow", "score")
    for r in rows:
        shadow = r["shadow"]
        table.add_row(
            r["study_uid"],
            r["active"]["model"],
            f"{r['active']['exam_score']:.3f}",
            shadow["model"],
            f"failed: {shadow['failure']}" if shadow["failure"] else f"{shadow['exam_score']:.3f}",
        )
    out.print(table)
