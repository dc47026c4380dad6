"""The outbox under several exporters and broken rows: each object is delivered once, and one
bad row fails alone."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation, Verification
from sqlalchemy import select

from mammo_node.config import Settings
from mammo_node.db.models import Destination, Instance, OutboxItem, utcnow
from mammo_node.db.session import Database, upgrade
from mammo_node.delivery.destinations import add_destination
from mammo_node.delivery.exporter import Exporter, default_exporter_id
from mammo_node.domain import OutboxState
from mammo_node.filing.ingest import Ingestor
from mammo_node.filing.storage import InstanceStore
from tests.helpers.site import file_dataset
from tests.helpers.tools import free_port


class Peer:
    """A real C-STORE SCP that counts what it receives."""

    def __init__(self, ae_title: str) -> None:
        self.port = free_port()
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(DigitalMammographyXRayImageStorageForPresentation)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: Any) -> int:
        with self._lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def _outbox(db_url: str, tmp_path: Path, exams: list[Any], peers: list[Peer]) -> Any:
    upgrade(db_url)
    settings = Settings(data_dir=tmp_path / "data", db_url=db_url, min_free_disk_mb=0)
    db = Database(db_url)
    store = InstanceStore(settings.storage_dir)
    ingestor = Ingestor(settings, db, store)
    for exam in exams:
        for ds in exam.datasets.values():
            file_dataset(ingestor, ds)
    for i, peer in enumerate(peers):
        add_destination(db, f"pacs{i}", ae_title=f"PACS{i}", host="127.0.0.1", port=peer.port)
    with db.session() as session:
        for instance in session.scalars(select(Instance)):
            for destination in session.scalars(select(Destination)):
                session.add(OutboxItem(instance_fk=instance.id, destination_fk=destination.id))
    return settings, db, store


@pytest.mark.postgres
def test_two_exporters_on_one_postgresql_deliver_each_object_once(
    pg_url: str, tmp_path: Path, synth_exams: list[Any]
) -> None:
    peers = [Peer(f"PACS{i}") for i in range(3)]
    try:
        settings, db, store = _outbox(pg_url, tmp_path, synth_exams, peers)
        exporters = [
            Exporter(settings, Database(pg_url), store, exporter_id=f"node{i}") for i in range(2)
        ]
        start = threading.Barrier(len(exporters))

        def drain(exporter: Exporter) -> None:
            start.wait()
            while exporter.run_once(batch=4):
                pass

        threads = [threading.Thread(target=drain, args=(e,)) for e in exporters]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        with db.read() as session:
            states = Counter(session.scalars(select(OutboxItem.state)))
            leased = session.scalars(select(OutboxItem).where(OutboxItem.leased_by != "")).all()
        assert states == {OutboxState.DELIVERED: 12 * 3}
        assert leased == []
        for peer in peers:
            assert len(peer.received) == 12
            assert set(peer.received.values()) == {1}, "an object was delivered twice"
    finally:
        for peer in peers:
            peer.stop()


def test_a_missing_or_broken_file_fails_its_own_row_only(
    tmp_path: Path, synth_exams: list[Any]
) -> None:
    peer = Peer("PACS0")
    try:
        db_url = f"sqlite:///{tmp_path / 'node.db'}"
        settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [peer])
        with db.read() as session:
            rels = session.scalars(select(Instance.rel_path).order_by(Instance.id)).all()
            paths = [store.path(p) for p in rels]
        paths[0].unlink()  # the disk lost one file
        paths[1].write_bytes(b"not DICOM at all")  # another is garbage
        assert Exporter(settings, db, store).run_once() == 4
        with db.read() as session:
            rows = session.execute(
                select(OutboxItem.state, OutboxItem.last_error).order_by(OutboxItem.id)
            ).all()
        assert [state for state, _ in rows] == ["pending", "pending", "delivered", "delivered"]
        assert all("cannot read the stored file" in error for _, error in rows[:2])
        assert len(peer.received) == 2
    finally:
        peer.stop()


def test_leases_of_an_exporter_that_ended_are_freed_on_start(
    tmp_path: Path, synth_exams: list[Any]
) -> None:
    import subprocess
    import sys

    peer = Peer("PACS0")
    try:
        db_url = f"sqlite:///{tmp_path / 'node.db'}"
        settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [peer])
        ended = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead_id = f"{default_exporter_id(settings).rsplit('/', 1)[0]}/{ended.stdout.strip()}"
        Exporter(settings, db, store, exporter_id=dead_id)._due(utcnow(), 64)  # leases all 4
        exporter = Exporter(settings, db, store)
        assert exporter.run_once() == 0, "leased rows are not taken"
        assert exporter.release_dead_leases() == 4
        assert exporter.run_once() == 4 and len(peer.received) == 4
    finally:
        peer.stop()
