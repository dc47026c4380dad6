"""Receiving a C-STORE dataset straight into the instance store's temp folder.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each incoming dataset to a
``NamedTemporaryFile`` (file meta first, then every P-DATA fragment as it comes) in
``tempfile``'s default folder. Storing the instance should be a rename on the same filesystem,
so the SCP gives pynetdicom a NamedTemporaryFile that defaults to the store's temp folder,
instead of changing ``tempfile.tempdir`` for the whole process.

This relies on one pynetdicom 3.x detail: ``dimse_messages.NamedTemporaryFile`` is looked up
each time a dataset starts. Were that to change, files would land in the system temp folder and
ingest would copy them across (``InstanceStore.commit`` handles EXDEV): slower, still correct.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from pynetdicom import dimse_messages

_lock = threading.Lock()
_directory: Path | None = None


def store_temp_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    """``tempfile.NamedTemporaryFile`` in the store's temp folder (unless given one)."""
    kwargs.setdefault("dir", _directory)
    return tempfile.NamedTemporaryFile(*args, **kwargs)  # pynetdicom closes it


def install(directory: Path) -> None:
    """Make pynetdicom receive datasets into ``directory``."""
    global _directory
    with _lock:
        _directory = directory
        dimse_messages.NamedTemporaryFile = store_temp_file  # type: ignore[attr-defined,assignment]


def installed() -> bool:
    return dimse_messages.NamedTemporaryFile is store_temp_file  # type: ignore[attr-defined,comparison-overlap]
