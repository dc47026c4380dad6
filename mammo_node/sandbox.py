"""Child processes for work on untrusted pixels: a crash or an out-of-memory there costs one
item an attempt, never the listener.

``Sandbox`` runs a picklable function in one long-lived child (``spawn``: no threads, locks or
sockets of the parent are inherited) whose address space is capped with ``RLIMIT_AS``; when the
child dies (SIGKILL, SIGSEGV, the kernel's OOM killer) the call raises ``SandboxCrash`` and the
next call starts a fresh child. A call that runs past its timeout kills the child the same way.

Receiving comes first: a child given ``nice`` adds it to its niceness before its first item
(the pixel-check decoder runs at ``worker_nice``, as the scoring process does), so decoding
images from outside never competes with the listeners at their priority.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from mammo_node.errors import MammoNodeError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SandboxCrash(MammoNodeError):
    """The child process died or ran out of time while working on an item."""


def start_child(limit_bytes: int, nice: int) -> None:
    """The child's first acts: lower its CPU priority, cap its memory. The child has one
    thread here; threads a decoder starts later inherit its niceness."""
    if nice > 0:
        os.nice(nice)
    limit_memory(limit_bytes)


def limit_memory(limit_bytes: int) -> None:
    """Cap this process's address space."""
    if limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    # one decode at a time needs no thread pools reserving address space per core
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Sandbox:
    """One child process with a memory cap, restarted after it dies; ``nice`` is added to
    the child's niceness (0: the parent's priority)."""

    def __init__(
        self,
        name: str,
        memory_limit_bytes: int,
        timeout: float = 300.0,
        processes: int = 1,
        *,
        nice: int = 0,
    ) -> None:
        if not 0 <= nice <= 19:
            raise ValueError(f'Argument "nice" should be between 0 and 19, not {nice}.')
        self.name = name
        self.memory_limit_bytes = memory_limit_bytes
        self.nice = nice
        self.timeout = timeout
        self.processes = processes
        self.restarts = 0
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_child,
                initargs=(self.memory_limit_bytes, self.nice),
            )
        return self._pool

    def child_pids(self) -> list[int]:
        processes = getattr(self._pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid]

    def _discard(self, pool: ProcessPoolExecutor) -> str:
        """Kill and forget ``pool``'s children (if it is still ours); returns how they ended."""
        with self._lock:
            if self._pool is not pool:
                return "restarted meanwhile"
            self._pool = None
            self.restarts += 1
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(5)
        pool.shutdown(wait=False, cancel_futures=True)
        return ", ".join(describe_exit(p.exitcode) for p in processes) or "ended"

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` in a child; raises SandboxCrash when the child does not survive it."""
        limit = timeout or self.timeout
        with self._lock:
            pool = self._executor()
        try:
            future = pool.submit(fn, *args)
        except (BrokenProcessPool, RuntimeError):  # broken by another call just now
            self._discard(pool)
            with self._lock:
                pool = self._executor()
            future = pool.submit(fn, *args)
        try:
            return future.result(timeout=limit)
        except BrokenProcessPool:
            how = self._discard(pool)
            raise SandboxCrash(f"the {self.name} process died ({how})") from None
        except FutureTimeout:
            self._discard(pool)
            raise SandboxCrash(
                f"the {self.name} process ran past {limit:.0f} s and was killed"
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
