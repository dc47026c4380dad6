"""The outbox under several exporters and broken rows: each object is delivered once, and one
bad row fails alone."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    DigitalMammographyXRayImageStorageForPresentation,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import select

from mammo_node.config import Settings
from mammo_node.db.models import AuditEvent, Destination, Instance, OutboxItem, utcnow
from mammo_node.db.session import Database, upgrade
from mammo_node.delivery.destinations import add_destination
from mammo_node.delivery.exporter import Exporter, default_exporter_id
from mammo_node.delivery.scu import Peer as PeerAddress
from mammo_node.delivery.scu import send_files
from mammo_node.domain import OutboxState
from mammo_node.filing.ingest import Ingestor
from mammo_node.filing.storage import InstanceStore
from tests.helpers.site import file_dataset
from tests.helpers.tools import free_port


class Peer:
    """A real C-STORE SCP that counts what it receives; with ``answers_queries`` it is also a
    Study Root C-FIND SCP over what it holds, as a PACS is."""

    def __init__(
        self, ae_title: str, *, answers_queries: bool = False, aborts_after_storing: int = 0
    ) -> None:
        self.port = free_port()
        self.aborts_after_storing = aborts_after_storing
        self.received: Counter[str] = Counter()
        self.held: dict[str, tuple[str, str]] = {}  # SOP Instance UID -> (study, series)
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(DigitalMammographyXRayImageStorageForPresentation)
        handlers = [(evt.EVT_C_STORE, self._store)]
        if answers_queries:
            ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
            handlers.append((evt.EVT_C_FIND, self._find))
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _store(self, event: Any) -> int:
        ds = event.dataset
        with self._lock:
            uid = str(event.request.AffectedSOPInstanceUID)
            self.received[uid] += 1
            self.held[uid] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
            crash = len(self.held) == self.aborts_after_storing
        if crash:  # stored, then the link goes before the answer is sent
            event.assoc.abort()
        return 0x0000

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        uid = str(query.get("SOPInstanceUID", ""))
        with self._lock:
            where = self.held.get(uid)
        if query.QueryRetrieveLevel == "IMAGE" and where == (
            str(query.StudyInstanceUID),
            str(query.SeriesInstanceUID),
        ):
            answer = Dataset()
            answer.QueryRetrieveLevel = "IMAGE"
            answer.StudyInstanceUID, answer.SeriesInstanceUID = where
            answer.SOPInstanceUID = uid
            yield 0xFF00, answer
        yield 0x0000, None

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


def _dead_exporter_id(settings: Settings) -> str:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{default_exporter_id(settings).rsplit('/', 1)[0]}/{ended.stdout.strip()}"


def _killed_after_the_peer_answered(
    settings: Settings, db: Database, store: InstanceStore, port: int, ae_title: str, sent: int
) -> list[str]:
    """An exporter leases every row, its first ``sent`` objects reach the peer and are
    answered, and the process dies before it records them: their rows stay pending, leased
    by a process that is gone. Returns the SOP Instance UIDs the peer got."""
    due = Exporter(settings, db, store, exporter_id=_dead_exporter_id(settings))._due(utcnow(), 64)
    items = [item for batch in due.values() for item in batch][:sent]
    report = send_files([item.path for item in items], PeerAddress("127.0.0.1", port, ae_title))
    assert report.delivered == sent
    return [item.sop_instance_uid for item in items]


def _found_by_query(db: Database) -> set[str]:
    with db.read() as session:
        rows = session.execute(
            select(AuditEvent.target, AuditEvent.detail).where(AuditEvent.action == "delivered")
        ).all()
    return {target for target, detail in rows if detail.get("found_by") == "C-FIND"}


def test_objects_in_flight_when_an_exporter_died_are_not_sent_twice_to_a_pacs_that_holds_them(
    tmp_path: Path, synth_exams: list[Any]
) -> None:
    peer = Peer("PACS0", answers_queries=True)
    try:
        db_url = f"sqlite:///{tmp_path / 'node.db'}"
        settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [peer])
        already = _killed_after_the_peer_answered(settings, db, store, peer.port, "PACS0", 2)
        exporter = Exporter(settings, db, store)
        assert exporter.release_dead_leases() == 4
        assert exporter.run_once() == 4
        with db.read() as session:
            states = Counter(session.scalars(select(OutboxItem.state)))
        assert states == {OutboxState.DELIVERED: 4}
        assert len(peer.received) == 4
        assert set(peer.received.values()) == {1}, "an object the PACS held was sent again"
        assert _found_by_query(db) == set(already)
    finally:
        peer.stop()


def test_an_object_stored_by_a_pacs_whose_answer_was_lost_is_not_sent_again(
    tmp_path: Path, synth_exams: list[Any]
) -> None:
    peer = Peer("PACS0", answers_queries=True, aborts_after_storing=2)
    try:
        db_url = f"sqlite:///{tmp_path / 'node.db'}"
        settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [peer])
        exporter = Exporter(settings, db, store)
        exporter.run_once()
        with db.read() as session:
            doubtful = session.scalars(
                select(OutboxItem.last_error).where(OutboxItem.in_doubt)
            ).all()
        assert len(doubtful) == 1 and doubtful[0].startswith("no answer")
        with db.session() as session:  # due again now, not after the backoff
            for row in session.scalars(select(OutboxItem)):
                row.next_attempt_at = utcnow()
        while exporter.run_once():
            pass
        with db.read() as session:
            states = Counter(session.scalars(select(OutboxItem.state)))
        assert states == {OutboxState.DELIVERED: 4}
        assert len(peer.received) == 4
        assert set(peer.received.values()) == {1}, "the object whose answer was lost came twice"
        assert len(_found_by_query(db)) == 1
    finally:
        peer.stop()


def test_a_destination_without_a_query_service_gets_objects_in_doubt_again(
    tmp_path: Path, synth_exams: list[Any]
) -> None:
    peer = Peer("PACS0")  # C-STORE only: the node cannot ask, so it sends (at least once)
    try:
        db_url = f"sqlite:///{tmp_path / 'node.db'}"
        settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [peer])
        already = _killed_after_the_peer_answered(settings, db, store, peer.port, "PACS0", 1)
        exporter = Exporter(settings, db, store)
        exporter.release_dead_leases()
        assert exporter.run_once() == 4
        assert peer.received[already[0]] == 2
        assert len(peer.received) == 4
        assert _found_by_query(db) == set()
    finally:
        peer.stop()


def test_orthanc_answers_the_delivery_check_of_objects_in_doubt(
    tmp_path: Path, synth_exams: list[Any], orthanc: Any
) -> None:
    """A real PACS: what Orthanc holds is found by C-FIND and recorded, the rest is sent."""
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [])
    add_destination(db, "orthanc", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    with db.session() as session:
        destination = session.scalars(select(Destination)).one()
        for instance in session.scalars(select(Instance)):
            session.add(OutboxItem(instance_fk=instance.id, destination_fk=destination.id))
    already = _killed_after_the_peer_answered(
        settings, db, store, orthanc.dicom_port, orthanc.aet, 3
    )
    exporter = Exporter(settings, db, store)
    exporter.release_dead_leases()
    assert exporter.run_once() == 4
    with db.read() as session:
        states = Counter(session.scalars(select(OutboxItem.state)))
    assert states == {OutboxState.DELIVERED: 4}
    assert _found_by_query(db) == set(already)
    study_uid = str(synth_exams[0].datasets[next(iter(synth_exams[0].datasets))].StudyInstanceUID)
    assert len(orthanc.instances_of_study(study_uid)) == 4


def test_leases_of_an_exporter_that_ended_are_freed_on_start(
    tmp_path: Path, synth_exams: list[Any]
) -> None:
    peer = Peer("PACS0")
    try:
        db_url = f"sqlite:///{tmp_path / 'node.db'}"
        settings, db, store = _outbox(db_url, tmp_path, synth_exams[:1], [peer])
        dead_id = _dead_exporter_id(settings)
        Exporter(settings, db, store, exporter_id=dead_id)._due(utcnow(), 64)  # leases all 4
        exporter = Exporter(settings, db, store)
        assert exporter.run_once() == 0, "leased rows are not taken"
        assert exporter.release_dead_leases() == 4
        assert exporter.run_once() == 4 and len(peer.received) == 4
    finally:
        peer.stop()
