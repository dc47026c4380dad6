"""Receiving a C-STORE dataset straight into the instance store's temp folder.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each incoming dataset to a
``NamedTemporaryFile`` (file meta first, then every P-DATA fragment as it comes) in
``tempfile``'s default folder. Storing the instance should be a rename on the same filesystem,
so the SCP gives pynetdicom a NamedTemporaryFile that defaults to the store's temp folder,
instead of changing ``tempfile.tempdir`` for the whole process.

The file is bounded as it grows: one data set may not exceed ``max_instance_bytes``, and the
disk's free space is checked every ``SPACE_CHECK_BYTES`` against ``min_free_disk_mb``. A
dataset past either limit is emptied at once and the write raises
:class:`ReceiveLimitError`, which makes pynetdicom abort the association: nothing of it is
acknowledged, so nothing acknowledged is lost, and a peer streaming an endless data set (or a
disk filling mid-transfer) cannot take the disk.

This relies on one pynetdicom 3.x detail: ``dimse_messages.NamedTemporaryFile`` is looked up
each time a dataset starts. Were that to change, files would land in the system temp folder and
ingest would copy them across (``InstanceStore.commit`` handles EXDEV): slower, still correct.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pynetdicom import dimse_messages

from mammo_node.errors import StorageError

logger = logging.getLogger(__name__)

#: free space is looked at each time this much more of one data set has been written
SPACE_CHECK_BYTES = 64 * 2**20


class ReceiveLimitError(StorageError):
    """A data set being received passed a limit; its association is aborted."""


@dataclass(frozen=True)
class ReceiveLimits:
    directory: Path | None = None
    max_instance_bytes: int = 0  # 0 = no limit
    min_free_bytes: int = 0


_lock = threading.Lock()
_limits = ReceiveLimits()


class BoundedReceiveFile:
    """The temp file pynetdicom writes one incoming data set to, with its limits."""

    def __init__(self, inner: Any, limits: ReceiveLimits) -> None:
        self._inner = inner
        self._limits = limits
        self._written = 0
        self._next_space_check = SPACE_CHECK_BYTES

    def __getattr__(self, name: str) -> Any:  # name, file, close, tell, seek...
        return getattr(self._inner, name)

    def write(self, data: bytes) -> int:
        self._written += len(data)
        limits = self._limits
        if limits.max_instance_bytes and self._written > limits.max_instance_bytes:
            self._refuse(f"a data set passed max_instance_bytes={limits.max_instance_bytes}")
        if self._written >= self._next_space_check:
            self._next_space_check += SPACE_CHECK_BYTES
            free = shutil.disk_usage(Path(self._inner.name).parent).free
            if free < limits.min_free_bytes:
                self._refuse(f"only {free // 2**20} MB free while receiving, below the minimum")
        return int(self._inner.write(data))

    def _refuse(self, why: str) -> None:
        self._inner.truncate(0)  # give the space back now, not when pynetdicom cleans up
        logger.warning("aborting an association: %s", why)
        raise ReceiveLimitError(why)


def store_temp_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    """``tempfile.NamedTemporaryFile`` in the store's temp folder (unless given one),
    bounded by the receive limits."""
    limits = _limits
    kwargs.setdefault("dir", limits.directory)
    inner = tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115 - pynetdicom closes it
    return BoundedReceiveFile(inner, limits)  # type: ignore[return-value]


def install(directory: Path, *, max_instance_bytes: int = 0, min_free_bytes: int = 0) -> None:
    """Make pynetdicom receive datasets into ``directory``, within the limits."""
    global _limits
    with _lock:
        _limits = ReceiveLimits(directory, max_instance_bytes, min_free_bytes)
        dimse_messages.NamedTemporaryFile = store_temp_file  # type: ignore[attr-defined,assignment]


def installed() -> bool:
    return dimse_messages.NamedTemporaryFile is store_temp_file  # type: ignore[attr-defined,comparison-overlap]
