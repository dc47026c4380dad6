"""What the node is receiving right now, for the work that gives way to receiving.

The scoring process paces down (fewer torch threads, see ``worker_process``) while the node
receives: an association is open on the Storage SCP, or a STOW-RS request is being read and
filed. The node owns one :class:`ReceivingNow`; it reads the SCP's count of open associations
and the web's STOW-RS route enters :meth:`ReceivingNow.upload` for each request it takes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ReceivingNow:
    """Open associations plus STOW-RS uploads in flight; calling it gives their sum."""

    def __init__(self, associations: Callable[[], int] | None = None) -> None:
        """``associations`` counts the SCP's open associations (none: only uploads count)."""
        self._associations = associations
        self._uploads = 0
        self._lock = threading.Lock()

    @contextmanager
    def upload(self) -> Iterator[None]:
        """One STOW-RS request, from its first body byte read to its last part filed."""
        with self._lock:
            self._uploads += 1
        try:
            yield
        finally:
            with self._lock:
                self._uploads -= 1

    @property
    def uploads(self) -> int:
        with self._lock:
            return self._uploads

    def __call__(self) -> int:
        associations = self._associations() if self._associations is not None else 0
        return associations + self.uploads
