"""The running node: every service of `mammo-node serve` built once and wired together."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from mammo_node.config import Settings
from mammo_node.db.session import Database, upgrade
from mammo_node.dimse.scp import StorageSCP
from mammo_node.grouper import Grouper, GrouperThread
from mammo_node.ingest import Ingestor
from mammo_node.storage import InstanceStore

logger = logging.getLogger(__name__)


class Node:
    """Database, instance store, ingest, DICOM SCP and grouping, started and stopped together."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            upgrade(settings.database_url)
        self.db = Database(settings.database_url)
        self.store = InstanceStore(settings.storage_dir)
        if removed := self.store.clean_temp():
            logger.info("removed %d unacknowledged temp file(s) left by a crash", removed)
        self.ingestor = Ingestor(settings, self.db, self.store)
        self.scp = StorageSCP(settings, self.db, self.ingestor)
        self.grouper = GrouperThread(Grouper(settings, self.db, self.store))
        self._stop = threading.Event()

    def start(self) -> None:
        self.scp.start()
        self.grouper.start()
        logger.info("node %s ready (data in %s)", self.settings.ae_title, self.settings.data_dir)

    def stop(self) -> None:
        """Stop receiving first (running C-STOREs finish), then the background services."""
        logger.info("stopping")
        self.scp.stop()
        self.grouper.stop()
        self.grouper.join(timeout=30)
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
