"""The scoring worker of ``mammo-node serve`` in its own process, restarted when it dies.

Decoding pixels and running the model on images from outside is where a process can die (an
out-of-memory, a decoder crash). In a child process that costs one exam one attempt: the
supervisor thread in the node sees the child end, takes its claim back at once (READY, or FAILED
after ``max_attempts``, see ``worker.release_dead_claims``) and starts a new child, while the
SCP and the web server in the parent keep answering.

Memory is bounded two ways: the supervisor reads the child's resident set from /proc and
kills it above ``worker_memory_limit_mb`` (works for CPU and GPU processes alike), and a CPU
child also caps its address space (``RLIMIT_AS``) above what the loaded model already uses.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from mammo_node.config import Settings
from mammo_node.errors import MammoNodeError
from mammo_node.observe.loops import LoopHealth
from mammo_node.sandbox import describe_exit

logger = logging.getLogger(__name__)
_POLL = 0.05


def worker_memory_limit(settings: Settings) -> int:
    """Resident-set limit of the scoring process, bytes (automatic: half the machine, at
    least 4 GiB)."""
    if settings.worker_memory_limit_mb:
        return settings.worker_memory_limit_mb * 2**20
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(4 * 2**30, total // 2)


def resident_bytes(pid: int) -> int:
    """VmRSS of a process from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _virtual_bytes() -> int:
    with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _die_with_parent(parent: int) -> None:
    """A node killed with SIGKILL takes its scoring process along (Linux PR_SET_PDEATHSIG), so
    the exam being scored is taken back when the node restarts, as in one process."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        logger.debug("PR_SET_PDEATHSIG unavailable; the child polls its parent instead")
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _child_main(
    settings: Settings,
    stop: MpEvent,
    ready: MpEvent,
    result: MpEvent,
    error: Any,
    limit: int,
    parent: int,
) -> None:
    """The child: load the model, then claim and score exams until told to stop."""
    _die_with_parent(parent)
    from mammo_node import logs
    from mammo_node.db.session import Database
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore
    from mammo_node.operations.models import ActiveBundleScorer
    from mammo_node.worker import Worker, warm_up

    logs.configure(settings.log_level)
    db = Database(settings.database_url)
    worker = Worker(
        settings,
        db,
        Ingestor(settings, db, InstanceStore(settings.storage_dir)),
        lambda: ActiveBundleScorer(settings, db),
        on_result=result.set,
    )
    try:
        scorer = worker.scorer
    except Exception as exc:
        error.value = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:1000]
        logger.exception("the worker cannot load its model; exams stay READY")
        return
    warm_up(worker)
    if str(getattr(scorer, "device", "cpu")).startswith("cpu"):
        budget = _virtual_bytes() + 2 * limit
        resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
    ready.set()
    while not stop.is_set() and os.getppid() == parent:
        try:
            busy = worker.run_once()
        except Exception:
            logger.exception("worker pass failed")
            busy = False
        if not busy:
            stop.wait(settings.worker_poll_seconds)
    db.dispose()


class ScoringProcessDied(MammoNodeError):
    """The scoring child process ended without being asked to (killed, crashed, OOM)."""


class WorkerSupervisor(threading.Thread):
    """Runs the scoring worker in a child process; restarts it and recovers its claim when it
    dies. Quacks like ``WorkerThread`` for the node (``ready``, ``model_error``, ``stop``)."""

    def __init__(self, settings: Settings, on_result: Any = None) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.settings = settings
        self.on_result = on_result
        self.limit = worker_memory_limit(settings)
        self._mp = multiprocessing.get_context("spawn")
        self.ready = self._mp.Event()
        self._result = self._mp.Event()
        self._stop_child = self._mp.Event()
        self._error = self._mp.Array("c", 1024)
        self.stopping = threading.Event()
        self.process: Any = None
        self.restarts = 0
        self.deaths: list[str] = []
        # /readyz and mammo_loop_failures_total: a dead child is a failed pass until the next
        # one has loaded its model
        self.health = LoopHealth("worker", is_alive=self.is_alive)

    @property
    def model_error(self) -> str:
        return bytes(self._error.value).decode("utf-8", "replace")

    def _start_child(self) -> None:
        self.ready.clear()
        self.process = self._mp.Process(
            target=_child_main,
            args=(
                self.settings,
                self._stop_child,
                self.ready,
                self._result,
                self._error,
                self.limit,
                os.getpid(),
            ),
            name="mammo-worker",
            daemon=True,
        )
        self.process.start()
        logger.info("scoring process %d started", self.process.pid)

    def run(self) -> None:
        from mammo_node.db.session import Database
        from mammo_node.worker import release_dead_claims

        db = Database(self.settings.database_url)
        self.health.started = True
        try:
            release_dead_claims(db, self.settings, "the node stopped while scoring it")
            while not self.stopping.is_set():
                self._start_child()
                why = self._watch()
                if self.stopping.is_set() and not why:
                    break
                self.deaths.append(why)
                try:
                    raise ScoringProcessDied(f"scoring process {self.process.pid} {why}")
                except ScoringProcessDied as exc:
                    self.health.failed(exc, "scoring process")
                try:
                    release_dead_claims(db, self.settings, f"the scoring process {why}")
                except Exception:
                    logger.exception("could not take back the dead scoring process's claim")
                if self.model_error:
                    return  # the model does not load: restarting will not help
                self.restarts += 1
                self.stopping.wait(min(30.0, 0.5 * 2 ** min(self.restarts, 6)))
        finally:
            self.health.stopped = self.stopping.is_set()
            db.dispose()

    def _watch(self) -> str:
        """Until the child ends: wake the exporter on results, kill the child above its memory
        limit. Returns why it died ('' when it stopped because it was asked to)."""
        process = self.process
        killed_for_memory = 0
        while process.is_alive():
            if self._result.is_set():
                self._result.clear()
                if self.on_result is not None:
                    self.on_result()
            if self.ready.is_set():
                self.health.succeeded()
            rss = resident_bytes(process.pid)
            if rss > self.limit:
                killed_for_memory = rss
                process.kill()
            process.join(_POLL)
        if self._result.is_set() and self.on_result is not None:
            self._result.clear()
            self.on_result()
        if killed_for_memory:
            return (
                f"was killed: resident memory {killed_for_memory // 2**20} MB above "
                f"worker_memory_limit_mb={self.limit // 2**20}"
            )
        if self.stopping.is_set() and process.exitcode == 0:
            return ""
        return f"died ({describe_exit(process.exitcode)})"

    def stop(self) -> None:
        self.stopping.set()
        self._stop_child.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to finish its exam (up to ``timeout``), then kill it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        process = self.process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                logger.warning("scoring process %d still busy: killed", process.pid)
                process.kill()
                process.join(5)
        left = None if deadline is None else max(0.1, deadline - time.monotonic())
        super().join(left)
