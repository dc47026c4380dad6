"""Health of the background loops (grouper, worker, exporter, audit writer).

A loop that stops or keeps failing does so quietly: exams stay RECEIVING, results stay in the
outbox, and nothing answers with an error. Each loop therefore reports every pass here; a
failing pass is logged with its traceback, counted in ``mammo_loop_failures_total`` and shown
by /readyz (not ready, with the loop's name) until a pass succeeds again. A loop whose thread
has ended while the node runs is reported dead; one not yet started, not ready.

Only the exception's type is kept for /readyz: the message may name a file or a value; the
log has the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mammo_node.observe import metrics

logger = logging.getLogger(__name__)


@dataclass
class LoopHealth:
    """What one loop last reported. Thread-safe: the loop writes, /readyz reads."""

    name: str
    is_alive: Callable[[], bool] = lambda: True
    last_success: float | None = None  # time.time() of the last pass that did not raise
    last_error: str = ""  # exception type of the last failed pass
    last_error_at: float | None = None
    consecutive_failures: int = 0
    failures: int = 0
    started: bool = False  # the loop has begun its first pass
    stopped: bool = False  # stopped on purpose: not dead
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def succeeded(self) -> None:
        with self._lock:
            self.last_success = time.time()
            self.consecutive_failures = 0

    def failed(self, exc: BaseException, doing: str) -> None:
        """Count and keep ``exc`` and log it with its traceback (call from the except block).

        A fault that persists is logged on its 1st, 2nd, 4th, 8th... pass in a row, so a loop
        polling ten times a second does not bury the log; the metric counts every pass.
        """
        metrics.loop_failed(self.name, type(exc).__name__)
        with self._lock:
            self.last_error = type(exc).__name__
            self.last_error_at = time.time()
            self.consecutive_failures += 1
            self.failures += 1
            in_a_row = self.consecutive_failures
        if in_a_row & (in_a_row - 1) == 0:
            logger.exception(
                "%s: %s failed (%d in a row); the loop goes on", self.name, doing, in_a_row
            )

    def state(self) -> tuple[bool, str]:
        """(healthy, what /readyz says about it)."""
        with self._lock:
            if not self.started and not self.stopped:
                return False, f"{self.name}: not started yet"
            if not self.stopped and not self.is_alive():
                last = f" (last error {self.last_error})" if self.last_error else ""
                return False, f"{self.name}: dead{last}"
            if self.consecutive_failures:
                since = (
                    f"last success {time.time() - self.last_success:.0f} s ago"
                    if self.last_success is not None
                    else "no pass has succeeded yet"
                )
                return False, (
                    f"{self.name}: failing ({self.consecutive_failures} pass(es) in a row, "
                    f"last error {self.last_error}; {since})"
                )
            return True, f"{self.name}: ok"

    def as_json(self) -> dict[str, Any]:
        ok, detail = self.state()
        with self._lock:
            return {
                "ok": ok,
                "detail": detail,
                "last_success": self.last_success,
                "last_error": self.last_error,
                "consecutive_failures": self.consecutive_failures,
                "failures": self.failures,
            }


class Loops:
    """The loops of one node process, by name."""

    def __init__(self) -> None:
        self._loops: dict[str, LoopHealth] = {}
        self._lock = threading.Lock()

    def add(self, health: LoopHealth) -> LoopHealth:
        with self._lock:
            self._loops[health.name] = health
        return health

    def __iter__(self) -> Any:
        with self._lock:
            return iter(list(self._loops.values()))

    def readiness(self) -> tuple[bool, str]:
        """(all healthy, the failing or dead ones named; else the loops that run)."""
        states = [loop.state() for loop in self]
        if not states:
            return True, "no background loops in this process"
        bad = [detail for ok, detail in states if not ok]
        if bad:
            return False, "; ".join(bad)
        return True, "running: " + ", ".join(loop.name for loop in self)
