"""Free ports, waiting for a condition, and the dcmtk tools as the other side."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} not installed: `make test` installs dcmtk (apt)")
    return path


def storescu(
    port: int, files: list[Path], *flags: str, aet: str = "MODALITY", aec: str = "MAMMO_NODE"
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [
            dcmtk("storescu"),
            "-aet",
            aet,
            "-aec",
            aec,
            *flags,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's non-empty output lines for one file (it exits 0 with errors, so a non-zero
    status means it could not read the file at all)."""
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy not installed: `make test` installs dicom3tools"
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 0, lines
    return lines


def dciodvfy_errors(path: Path) -> list[str]:
    return [line for line in dciodvfy(path) if line.startswith("Error")]
