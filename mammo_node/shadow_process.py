"""The shadow bundle scores in its own process, supervised like the scoring worker.

A shadow bundle (``mammo-node models shadow``) decodes the same images from outside as the
active one and runs another model on them: in the node's process an out-of-memory or a crash
there would take the listeners down for a model whose results are never sent. So it runs in a
child process, started while a shadow bundle is set, under the same limits as the scoring
child (``worker_memory_limit_mb`` on its resident set, read from /proc by the supervisor, and
``RLIMIT_AS`` above the loaded model on CPU). When the child dies, the exam it was scoring is
recorded as failed for that bundle (a ``shadow_results`` row with ``failure``: it is not tried
again, so one bad exam cannot stall the shadow) and a new child goes on with the next exam.
The child ends on its own when the shadow role is cleared; a bundle that does not load is not
retried until the shadow role names another one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import threading
import time
from typing import Any

from mammo_node.config import Settings
from mammo_node.errors import DatabaseError, MammoNodeError
from mammo_node.observe.loops import LoopHealth
from mammo_node.sandbox import describe_exit
from mammo_node.worker_process import (
    SharedFlag,
    _die_with_parent,
    _virtual_bytes,
    resident_bytes,
    worker_memory_limit,
)

logger = logging.getLogger(__name__)
_POLL = 0.05


class ShadowProcessDied(MammoNodeError):
    """The shadow scoring process ended without being asked to (killed, crashed, OOM)."""


class ShadowBundleError(MammoNodeError):
    """The shadow bundle does not load; it is not retried until another one is set."""


def _shadow_main(
    settings: Settings,
    stop: Any,
    ready: Any,
    current: Any,
    sha_box: Any,
    error: Any,
    limit: int,
    parent: int,
) -> None:
    """The child: while a shadow bundle is set, score the exams it has not scored."""
    _die_with_parent(parent)
    from mammo_node import logs
    from mammo_node.db.session import Database
    from mammo_node.errors import ModelError
    from mammo_node.filing.storage import InstanceStore
    from mammo_node.operations.models import ModelRole, ShadowScorer, bundle_with_role
    from mammo_node.scrub import describe

    logs.configure(settings.log_level)
    db = Database(settings.database_url)

    def on_exam(result_id: int) -> None:
        current.value = result_id

    scorer = ShadowScorer(settings, db, InstanceStore(settings.storage_dir).root, on_exam)
    capped = False
    try:
        while not stop.is_set() and os.getppid() == parent:
            try:
                shadow = bundle_with_role(db, ModelRole.SHADOW)
            except DatabaseError:
                logger.warning("shadow: cannot read the shadow bundle", exc_info=True)
                stop.wait(settings.worker_poll_seconds)
                continue
            if shadow is None:
                return  # shadow scoring is off: the supervisor starts a child for the next one
            sha_box.value = shadow[1].encode("ascii")
            try:
                scorer.scorer(*shadow)
            except ModelError as exc:
                error.value = describe(exc).encode("utf-8", "replace")[:1000]
                logger.error("the shadow bundle %s does not load: %s", shadow[1][:12], exc)
                return
            if not capped:
                if str(getattr(scorer.scorer(*shadow), "device", "cpu")).startswith("cpu"):
                    budget = _virtual_bytes() + 2 * limit
                    resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
                capped = True
                ready.set()
            try:
                busy = scorer.run_once(shadow)
            except DatabaseError:
                logger.warning("shadow scoring pass failed", exc_info=True)
                busy = False
            if not busy:
                stop.wait(settings.worker_poll_seconds)
    finally:
        db.dispose()


class ShadowSupervisor(threading.Thread):
    """Starts the shadow scoring process while a shadow bundle is set; records the exam a dead
    one was scoring and starts another."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="shadow-supervisor", daemon=True)
        self.settings = settings
        self.limit = worker_memory_limit(settings)
        self.poll_seconds = settings.worker_poll_seconds * 2
        self._mp = multiprocessing.get_context("spawn")
        # shared with the child without locks: a child killed while holding a lock (or while
        # waiting on an Event) would leave the next set() or read in this process blocked
        self.ready = SharedFlag(self._mp)
        self._stop_child = SharedFlag(self._mp)
        self._current = self._mp.Value("q", 0, lock=False)  # result id being scored, 0: none
        self._sha = self._mp.Array("c", 65, lock=False)  # the bundle the child scores with
        self._error = self._mp.Array("c", 1024, lock=False)
        self.stopping = threading.Event()
        self.process: Any = None
        self.restarts = 0
        self.deaths: list[str] = []
        self.health = LoopHealth("shadow", is_alive=self.is_alive)

    @property
    def model_error(self) -> str:
        return bytes(self._error.value).decode("utf-8", "replace")

    def _start_child(self) -> None:
        self.ready.clear()
        self._current.value = 0
        self._error.value = b""
        self.process = self._mp.Process(
            target=_shadow_main,
            args=(
                self.settings,
                self._stop_child,
                self.ready,
                self._current,
                self._sha,
                self._error,
                self.limit,
                os.getpid(),
            ),
            name="mammo-shadow",
            daemon=True,
        )
        self.process.start()
        logger.info("shadow scoring process %d started", self.process.pid)

    def run(self) -> None:
        from mammo_node.db.session import Database
        from mammo_node.operations.models import ModelRole, bundle_with_role

        db = Database(self.settings.database_url)
        self.health.started = True
        unloadable: str | None = None  # the sha of a shadow bundle that did not load
        try:
            while not self.stopping.is_set():
                try:
                    shadow = bundle_with_role(db, ModelRole.SHADOW)
                except DatabaseError as exc:
                    self.health.failed(exc, "reading the shadow bundle")
                    self.stopping.wait(self.poll_seconds)
                    continue
                if shadow is None or shadow[1] == unloadable:
                    if shadow is None:
                        unloadable = None
                        self.health.succeeded()
                    self.stopping.wait(self.poll_seconds)
                    continue
                self._start_child()
                why = self._watch()
                if self.stopping.is_set():
                    break
                if not why:
                    if self.model_error:
                        unloadable = shadow[1]
                        try:
                            raise ShadowBundleError(self.model_error)
                        except ShadowBundleError as exc:
                            self.health.failed(exc, "loading the shadow bundle")
                    continue
                self._died(db, why)
        finally:
            self.health.stopped = self.stopping.is_set()
            db.dispose()

    def _died(self, db: Any, why: str) -> None:
        """Record the exam the dead child was scoring as failed for its bundle, then wait a
        little longer after each death before the next child."""
        from mammo_node.operations.models import record_shadow_failure

        self.deaths.append(why)
        result_id = int(self._current.value)
        sha = bytes(self._sha.value).decode("ascii", "replace")
        try:
            raise ShadowProcessDied(f"shadow scoring process {self.process.pid} {why}")
        except ShadowProcessDied as exc:
            self.health.failed(exc, "shadow scoring process")
        if result_id and sha:
            try:
                record_shadow_failure(db, result_id, sha, f"the shadow scoring process {why}")
            except DatabaseError:
                logger.exception("could not record the exam the shadow process died on")
        self.restarts += 1
        self.stopping.wait(min(30.0, 0.5 * 2 ** min(self.restarts, 6)))

    def _watch(self) -> str:
        """Until the child ends: kill it above its memory limit. Returns why it died ('' when
        it ended on its own or because it was asked to)."""
        process = self.process
        killed_for_memory = 0
        while process.is_alive():
            if self.ready.is_set():
                self.health.succeeded()
            rss = resident_bytes(process.pid)
            if rss > self.limit:
                killed_for_memory = rss
                process.kill()
            process.join(_POLL)
        if killed_for_memory:
            return (
                f"was killed: resident memory {killed_for_memory // 2**20} MB above "
                f"worker_memory_limit_mb={self.limit // 2**20}"
            )
        if process.exitcode == 0:
            return ""
        return f"died ({describe_exit(process.exitcode)})"

    def stop(self) -> None:
        self.health.stopped = True
        self.stopping.set()
        self._stop_child.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to finish its exam (up to ``timeout``), then kill it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        process = self.process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                logger.warning("shadow scoring process %d still busy: killed", process.pid)
                process.kill()
                process.join(5)
        left = None if deadline is None else max(0.1, deadline - time.monotonic())
        super().join(left)
