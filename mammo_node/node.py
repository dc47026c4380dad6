"""The running node: every service of `mammo-node serve` built once and wired together."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from mammo_node.config import Settings
from mammo_node.db.session import Database, upgrade
from mammo_node.delivery.exporter import Exporter, ExporterThread
from mammo_node.filing.ingest import Ingestor
from mammo_node.filing.storage import InstanceStore
from mammo_node.grouping.service import Grouper, GrouperThread
from mammo_node.observe.audit import AuditLog
from mammo_node.observe.loops import Loops
from mammo_node.operations.retention import RetentionPolicy, RetentionThread
from mammo_node.receive.activity import ReceivingNow
from mammo_node.receive.scp import StorageSCP
from mammo_node.shadow_process import ShadowSupervisor
from mammo_node.web.server import WebServer
from mammo_node.worker_process import WorkerSupervisor

logger = logging.getLogger(__name__)


class Node:
    """Database, instance store, ingest, DICOM SCP and grouping, started and stopped together."""

    def __init__(self, settings: Settings, *, migrate: bool = True, score: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            upgrade(settings.database_url, storage_dir=settings.storage_dir)
        self.db = Database(settings.database_url)
        self.store = InstanceStore(settings.storage_dir)
        if removed := self.store.clean_temp():
            logger.info("removed %d unacknowledged temp file(s) left by a crash", removed)
        self.ingestor = Ingestor(settings, self.db, self.store)
        self.scp = StorageSCP(settings, self.db, self.ingestor)
        # what the node receives now: open associations and STOW-RS uploads in flight
        self.receiving = ReceivingNow(self.scp.open_associations)
        scores_here = score and settings.serve_worker
        self.grouper = GrouperThread(
            Grouper(settings, self.db, self.store, scores_here=scores_here)
        )
        self.exporter = ExporterThread(Exporter(settings, self.db, self.store))
        self.workers: list[WorkerSupervisor] = []
        self.shadow: ShadowSupervisor | None = None
        if scores_here:
            # scoring decodes images from outside: in child processes, so that a crash or an
            # out-of-memory there costs that exam an attempt, never the listeners; each child
            # scores with the registry's active bundle (activation needs no restart), at a
            # lower priority and with fewer threads while the node receives (associations
            # open, STOW-RS uploads in flight)
            self.workers = [
                WorkerSupervisor(
                    settings, on_result=self.exporter.wake, receiving=self.receiving, index=i
                )
                for i in range(settings.scoring_processes)
            ]
            # a shadow bundle scores in a child process of its own, for the same reason
            self.shadow = ShadowSupervisor(settings)
        self.retention: RetentionThread | None = None
        if RetentionPolicy.from_settings(settings).active:
            self.retention = RetentionThread(settings, self.db, self.store)
        self.audit = AuditLog(self.db)
        self.loops = Loops()
        loops = (self.grouper, *self.workers, self.exporter, self.shadow, self.retention)
        for thread in loops:  # the web app adds audit
            if thread is not None:
                self.loops.add(thread.health)
        self.web = WebServer(
            settings,
            self.db,
            self.ingestor,
            audit_log=self.audit,
            model_ready=self._model_ready if self.workers else None,
            loops=self.loops,
            public_url=settings.public_url,
            receiving=self.receiving,
        )
        self._stop = threading.Event()

    @property
    def worker(self) -> WorkerSupervisor | None:
        """The first scoring process's supervisor (None when this node does not score)."""
        return self.workers[0] if self.workers else None

    def _model_ready(self) -> tuple[bool, str]:
        """Ready as soon as one scoring process has loaded the model."""
        if not self.workers:
            return False, "no scoring worker in this process"
        loaded = sum(w.ready.is_set() for w in self.workers)
        of = (
            f" ({loaded} of {len(self.workers)} scoring processes)" if len(self.workers) > 1 else ""
        )
        if loaded:
            return True, f"model loaded{of}"
        errors = [w.model_error for w in self.workers if w.model_error]
        if errors:
            return False, f"model failed to load: {errors[0]}"
        return False, "model loading"

    def start(self) -> None:
        self.scp.start()
        self.web.start()
        self.grouper.start()
        for worker in self.workers:
            worker.start()
        self.exporter.start()
        if self.retention is not None:
            self.retention.start()
        if self.shadow is not None:
            self.shadow.start()
        logger.info("node %s ready (data in %s)", self.settings.ae_title, self.settings.data_dir)

    def stop(self) -> None:
        """Stop receiving first (running C-STOREs finish), then the background services."""
        logger.info("stopping")
        self.web.stop()
        self.scp.stop()
        threads = [
            t
            for t in (self.grouper, *self.workers, self.exporter, self.retention, self.shadow)
            if t is not None
        ]
        for thread in threads:
            thread.stop()
        # the exam being scored may finish within the grace period; if not, it is abandoned:
        # its claim is released when the node starts again, and deterministic output UIDs
        # make the retry a no-duplicate
        for thread in threads:
            if thread.is_alive():
                grace = self.settings.shutdown_grace_seconds if thread in self.workers else 30
                thread.join(timeout=grace)
        self.db.dispose()
        logger.info("stopped")

    def run_until_signalled(self) -> None:
        def _handler(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)
        self.start()
        try:
            self._stop.wait()
        finally:
            self.stop()
        if any(worker.is_alive() for worker in self.workers):
            # still inside the model after the grace period: leave without running the
            # interpreter's teardown under a busy native thread (it would abort the process)
            logger.warning("an exam was abandoned mid-scoring; it is rescored after restart")
            logging.shutdown()
            os._exit(0)
