"""The scoring worker of ``mammo-node serve`` in its own process, restarted when it dies.

Decoding pixels and running the model on images from outside is where a process can die (an
out-of-memory, a decoder crash). In a child process that costs one exam one attempt: the
supervisor thread in the node sees the child end, takes its claim back at once (READY, or FAILED
after ``max_attempts``, see ``worker.release_dead_claims``) and starts a new child, while the
SCP and the web server in the parent keep answering.

Memory is bounded two ways: the supervisor reads the child's resident set from /proc and
kills it above ``worker_memory_limit_mb`` (works for CPU and GPU processes alike), and a CPU
child also caps its address space (``RLIMIT_AS``) above what the loaded model already uses.
While exams follow one another the child keeps the image buffers one freed for the next
(``worker_reuse_freed_memory``, :mod:`mammo_node.heap`); when it runs out of exams it gives
them back, so an idle child is as small as before.

Receiving comes first: the child lowers its own CPU priority before anything else
(``worker_nice`` added to the node's niceness, optionally SCHED_IDLE), and bounds torch's
intra-op threads (``worker_threads``). The supervisor copies what the node receives now (open
associations and STOW-RS uploads in flight, ``receive.activity``) into a shared value every
poll; the child reads it between exams and between scoring and writing, and drops to
``worker_threads_receiving`` threads while anything is being received.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mammo_node import heap
from mammo_node.config import Settings
from mammo_node.errors import MammoNodeError
from mammo_node.observe.loops import LoopHealth
from mammo_node.sandbox import describe_exit

logger = logging.getLogger(__name__)
_POLL = 0.05
#: how often a supervisor looks again for claims held by scoring processes that have ended
RECHECK_CLAIMS_SECONDS = 10.0


def worker_memory_limit(settings: Settings) -> int:
    """Resident-set limit of one scoring process, bytes (automatic: half the machine shared
    by the ``scoring_processes``, at least 4 GiB each)."""
    if settings.worker_memory_limit_mb:
        return settings.worker_memory_limit_mb * 2**20
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(4 * 2**30, total // (2 * settings.scoring_processes))


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


@dataclass(frozen=True)
class ScoringPriority:
    """How the scoring process gives way to receiving (from the ``worker_*`` settings)."""

    nice: int  # added to the niceness the process starts with
    sched_idle: bool
    threads: int  # torch intra-op threads with no association open
    threads_receiving: int  # ... while one or more are open

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoringPriority:
        # the CPUs are shared by the scoring processes (worker_threads is per process)
        cpus = len(os.sched_getaffinity(0))
        threads = settings.worker_threads or max(1, cpus // settings.scoring_processes)
        receiving = settings.worker_threads_receiving or max(1, threads // 2)
        return cls(
            settings.worker_nice, settings.worker_sched_idle, threads, min(receiving, threads)
        )

    def threads_for(self, associations: int) -> int:
        return self.threads_receiving if associations > 0 else self.threads


def lower_priority(priority: ScoringPriority) -> int:
    """Lower every thread of this process (Linux niceness and policy are per thread; threads
    started later inherit them). Returns the niceness reached."""
    nice = os.nice(0)
    target = min(19, nice + priority.nice)
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, target)
            if priority.sched_idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return target


class ThreadGovernor:
    """Sets torch's intra-op threads from the open-association count (in the child)."""

    def __init__(self, priority: ScoringPriority, receiving: Any, threads: Any) -> None:
        self.priority = priority
        self.receiving = receiving  # shared int written by the supervisor
        self.threads = threads  # shared int: the threads in use, for /metrics and tests

    def __call__(self) -> int:
        """Sets the threads for the next stage of an exam and returns them (the writers use as
        many)."""
        import torch

        wanted = self.priority.threads_for(int(self.receiving.value))
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
            logger.debug("scoring with %d thread(s)", wanted)
        self.threads.value = wanted
        return wanted


def _child_main(
    settings: Settings,
    stop: SharedFlag,
    ready: SharedFlag,
    result: SharedFlag,
    error: Any,
    limit: int,
    parent: int,
    receiving: Any,
    threads: Any,
    worker_id: str | None,
) -> None:
    """The child: lower its priority, load the model, then claim and score exams until told
    to stop."""
    _die_with_parent(parent)
    priority = ScoringPriority.from_settings(settings)
    lower_priority(priority)
    if settings.worker_reuse_freed_memory:
        heap.reuse_freed_memory()
    governor = ThreadGovernor(priority, receiving, threads)
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
        worker_id=worker_id,
        on_result=result.set,
        pace=governor,
    )
    try:
        governor()  # the model loads with bounded threads too
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
    was_busy = False
    while not stop.is_set() and os.getppid() == parent:
        try:
            governor()
            busy = worker.run_once()
        except Exception:
            logger.exception("worker pass failed")
            busy = False
        if not busy:
            if was_busy:  # out of exams: the kept image buffers go back to the system
                heap.release_freed_memory()
            stop.wait(settings.worker_poll_seconds)
        was_busy = busy
    db.dispose()


class SharedFlag:
    """A flag shared with a child process without a lock: a byte in shared memory. A
    ``multiprocessing.Event`` takes a lock to be read or set, and a child killed while it
    held that lock (SIGKILL, the memory limit) leaves the parent blocked for ever on its next
    ``is_set()``; a byte cannot be left held."""

    def __init__(self, context: Any) -> None:
        self._value = context.RawValue("b", 0)

    def is_set(self) -> bool:
        return bool(self._value.value)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._value.value and time.monotonic() < deadline:
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
        return self.is_set()


class RingingFlag(SharedFlag):
    """A SharedFlag whose ``set`` also wakes the parent: one byte down a pipe, written without
    blocking (a pipe full of unread bytes has already rung). The supervisor waits on the pipe
    and the child's exit together instead of sleeping out a poll interval, so a result's
    deliveries start as soon as it is committed (the exporter used to wait up to 50 ms more).
    The byte in shared memory stays the record that a result came; a child killed mid-write
    leaves at most a byte in the pipe."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._reader, self._writer = context.Pipe(duplex=False)
        os.set_blocking(self._reader.fileno(), False)  # drained without blocking

    def set(self) -> None:
        super().set()
        try:
            os.set_blocking(self._writer.fileno(), False)
            os.write(self._writer.fileno(), b"\0")
        except OSError:  # full (it has rung) or closed: the flag above is what counts
            pass

    def wait_or_exit(self, process_sentinel: int, timeout: float) -> bool:
        """Until the flag rings or the process ends, at most ``timeout`` seconds; True when
        it rang. The bytes that rang are read, so the next wait waits again."""
        ready = multiprocessing.connection.wait([self._reader, process_sentinel], timeout)
        if self._reader not in ready:
            return False
        try:
            while os.read(self._reader.fileno(), 4096):
                pass
        except BlockingIOError:
            pass
        return True


class ScoringProcessDied(MammoNodeError):
    """The scoring child process ended without being asked to (killed, crashed, OOM)."""


class WorkerSupervisor(threading.Thread):
    """Runs the scoring worker in a child process; restarts it and recovers its claim when it
    dies; the node's and `mammo-node worker`'s scoring (``ready``, ``model_error``, ``stop``)."""

    def __init__(
        self,
        settings: Settings,
        on_result: Any = None,
        *,
        receiving: Callable[[], int] | None = None,
        worker_id: str | None = None,
        index: int = 0,
    ) -> None:
        """``receiving`` counts what the node receives now (open associations, STOW-RS
        uploads: the node's ``ReceivingNow``); ``worker_id`` a stable name for the child's
        claims (default: host/AE/worker/<child pid>); ``index`` numbers this one among the
        node's ``scoring_processes`` (names of thread, process, loop)."""
        suffix = f"-{index + 1}" if index else ""
        super().__init__(name=f"worker-supervisor{suffix}", daemon=True)
        self.suffix = suffix
        self.settings = settings
        self.on_result = on_result
        self.receiving = receiving
        self.worker_id = worker_id
        self.limit = worker_memory_limit(settings)
        self._mp = multiprocessing.get_context("spawn")
        self.ready = SharedFlag(self._mp)
        self._result = RingingFlag(self._mp)
        self._stop_child = SharedFlag(self._mp)
        self._error = self._mp.Array("c", 1024)
        self._receiving = self._mp.RawValue("i", 0)
        self._threads = self._mp.RawValue("i", 0)
        self.stopping = threading.Event()
        self.process: Any = None
        self.restarts = 0
        self.deaths: list[str] = []
        # /readyz and mammo_loop_failures_total: a dead child is a failed pass until the next
        # one has loaded its model
        self.health = LoopHealth(f"worker{suffix}", is_alive=self.is_alive)

    @property
    def model_error(self) -> str:
        return bytes(self._error.value).decode("utf-8", "replace")

    @property
    def threads(self) -> int:
        """torch threads the scoring process uses now (0 before it has set them)."""
        return int(self._threads.value)

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
                self._receiving,
                self._threads,
                self.worker_id,
            ),
            name=f"mammo-worker{self.suffix}",
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
            if self.worker_id:  # a stable name: its claims are from a run that ended
                release_dead_claims(
                    db, self.settings, "the worker stopped while scoring it", self.worker_id
                )
            while not self.stopping.is_set():
                self._start_child()
                why = self._watch(db)
                if self.stopping.is_set() and not why:
                    break
                self.deaths.append(why)
                try:
                    raise ScoringProcessDied(f"scoring process {self.process.pid} {why}")
                except ScoringProcessDied as exc:
                    self.health.failed(exc, "scoring process")
                try:
                    release_dead_claims(db, self.settings, f"the scoring process {why}")
                    if self.worker_id:
                        release_dead_claims(
                            db, self.settings, f"the scoring process {why}", self.worker_id
                        )
                except Exception:
                    logger.exception("could not take back the dead scoring process's claim")
                if self.model_error:
                    return  # the model does not load: restarting will not help
                self.restarts += 1
                self.stopping.wait(min(30.0, 0.5 * 2 ** min(self.restarts, 6)))
        finally:
            self.health.stopped = self.stopping.is_set()
            db.dispose()

    def _watch(self, db: Any) -> str:
        """Until the child ends: wake the exporter on results, kill the child above its memory
        limit, and every RECHECK_CLAIMS_SECONDS take back claims of this host's scoring
        processes that have ended since (one killed with the node a moment before this one
        started can still be exiting when the start-up check ran). Returns why the child died
        ('' when it stopped because it was asked to)."""
        from mammo_node.worker import release_dead_claims

        process = self.process
        killed_for_memory = 0
        recheck = time.monotonic() + RECHECK_CLAIMS_SECONDS
        while process.is_alive():
            if time.monotonic() >= recheck:
                recheck = time.monotonic() + RECHECK_CLAIMS_SECONDS
                try:
                    release_dead_claims(db, self.settings, "the scoring process ended")
                except Exception:  # the next look tries again; scoring goes on meanwhile
                    logger.exception("could not look for claims of ended scoring processes")
            if self.receiving is not None:
                self._receiving.value = self.receiving()
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
            self._result.wait_or_exit(process.sentinel, _POLL)  # a result wakes it at once
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
            # still loading its model: no exam claimed yet, nothing to wait for
            process.join(timeout if self.ready.is_set() else 0)
            if process.is_alive():
                logger.warning("scoring process %d still busy: killed", process.pid)
                process.kill()
                process.join(5)
        left = None if deadline is None else max(0.1, deadline - time.monotonic())
        super().join(left)
