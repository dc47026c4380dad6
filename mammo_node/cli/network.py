"""DICOM network tools: `echo` and `send` (C-ECHO / C-STORE to any peer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mammo_node.errors import MammoNodeError

if TYPE_CHECKING:
    pass
from mammo_node.cli.app import app
from mammo_node.cli.common import _fail, err, out


# --- network tools -----------------------------------------------------------------------
@app.command()
def echo(
    host: str,
    port: int,
    called_ae: Annotated[str, typer.Option("--called-ae", "-aec")] = "ANY-SCP",
    calling_ae: Annotated[str, typer.Option("--calling-ae", "-aet")] = "MAMMO_NODE",
) -> None:
    """C-ECHO a DICOM peer."""
    from mammo_node.delivery.scu import Peer
    from mammo_node.delivery.scu import echo as c_echo

    status = c_echo(Peer(host, port, called_ae, calling_ae))
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
    from mammo_node.delivery.scu import Peer, parse_address, send_parallel

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
