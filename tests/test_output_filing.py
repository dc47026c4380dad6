"""The node's own outputs of one exam are filed together (``Ingestor.ingest_outputs``): every
file fsynced in its place before one index transaction, each folder fsynced once, and a
failure at any step leaves neither a row nor a file of the batch behind. Real SR / SC / SEG /
CAD SR / GSPS objects from the writers, a real store, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mammo_node.config import Settings
from mammo_node.db.models import Exam, Instance
from mammo_node.db.session import Database, upgrade
from mammo_node.domain import IngestOutcome, Origin
from mammo_node.errors import DatabaseError, InvalidInstanceError, StorageError
from mammo_node.filing.ingest import Ingestor
from mammo_node.filing.storage import InstanceStore
from mammo_node.writers import OutputObject, build_outputs
from tests.helpers.site import file_dataset, synth_exam
from tests.helpers.writers import make_inference


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path / "data", db_url=db_url, min_free_disk_mb=0)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    store = InstanceStore(settings.storage_dir)
    ingestor = Ingestor(settings, db, store)
    exam = synth_exam("FILE-0001", "screening", "L", dt.date(2026, 6, 1))
    for ds in exam.datasets.values():
        file_dataset(ingestor, ds)
    yield db, store, ingestor, exam
    db.dispose()


def outputs_of(exam: Any) -> list[OutputObject]:
    return build_outputs(exam.datasets, make_inference(exam.datasets), revision=0)


def temps_for(store: InstanceStore, outputs: list[OutputObject]) -> list[Path]:
    temps = []
    for obj in outputs:
        temps.append(store.temp_path())
        obj.dataset.save_as(temps[-1], enforce_file_format=True)
    return temps


def generated_rows(db: Database) -> list[Instance]:
    with db.read() as session:
        return list(
            session.scalars(select(Instance).where(Instance.origin == Origin.GENERATED.value))
        )


def stored_files(store: InstanceStore) -> set[Path]:
    return {p for p in store.root.rglob("*.dcm") if store.tmp_dir not in p.parents}


def test_outputs_are_filed_together_durably(node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db, store, ingestor, exam = node
    outputs = outputs_of(exam)
    before = stored_files(store)
    temps = temps_for(store, outputs)
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    results = ingestor.ingest_outputs(temps, calling_ae="MAMMO_NODE")
    monkeypatch.setattr(os, "fsync", real_fsync)

    assert [r.sop_instance_uid for r in results] == [o.sop_instance_uid for o in outputs]
    assert {r.outcome for r in results} == {IngestOutcome.STORED}
    rows = {r.sop_instance_uid: r for r in generated_rows(db)}
    assert set(rows) == {o.sop_instance_uid for o in outputs}
    with db.read() as session:
        exam_id = session.scalars(select(Exam.id).where(Exam.study_uid == exam.study_uid)).one()
    for obj in outputs:
        row = rows[obj.sop_instance_uid]
        assert row.exam_fk == exam_id and row.calling_ae == "MAMMO_NODE"
        assert store.path(row.rel_path).read_bytes() == open_bytes(obj)
    assert len(stored_files(store) - before) == len(outputs)
    assert not list(store.tmp_dir.iterdir()), "every temp file was consumed"
    # every file once (before its move); each new series folder once, and the study folder
    # once per series folder made in it (so the folder's entry is durable)
    files = [p for p in synced if p.endswith(".dcm")]
    folders = [p for p in synced if not p.endswith(".dcm")]
    assert files == [str(t) for t in temps]
    series_folders = sorted({str(store.path(r.rel_path).parent) for r in rows.values()})
    study_folder = str(store.path(exam.study_uid))
    assert sorted(folders) == sorted(series_folders + [study_folder] * len(series_folders))
    assert len(series_folders) < len(outputs), "outputs share series: fewer folder syncs"


def open_bytes(obj: OutputObject) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    obj.dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_unreadable_output_files_none_of_the_batch(node: Any) -> None:
    db, store, ingestor, exam = node
    before = stored_files(store)
    temps = temps_for(store, outputs_of(exam))
    temps[3].write_bytes(b"not a DICOM file")
    with pytest.raises(InvalidInstanceError):
        ingestor.ingest_outputs(temps, calling_ae="MAMMO_NODE")
    assert generated_rows(db) == []
    assert stored_files(store) == before
    assert not list(store.tmp_dir.iterdir())


def test_a_failed_move_files_none_of_the_batch(node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db, store, ingestor, exam = node
    before = stored_files(store)
    temps = temps_for(store, outputs_of(exam))
    real_replace = os.replace
    moved: list[str] = []

    def replace_then_fail(src: Any, dst: Any) -> None:
        if len(moved) == 5:
            raise OSError(28, "No space left on device")
        moved.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(StorageError, match="No space left"):
        ingestor.ingest_outputs(temps, calling_ae="MAMMO_NODE")
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(moved) == 5
    assert generated_rows(db) == []
    assert stored_files(store) == before, "the files moved before the failure were taken back"
    assert not list(store.tmp_dir.iterdir())


def test_a_failed_index_transaction_leaves_no_file(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, store, ingestor, exam = node
    before = stored_files(store)
    temps = temps_for(store, outputs_of(exam))
    real_index_in = Ingestor._index_in
    indexed: list[str] = []

    def index_then_fail(self: Ingestor, session: Any, facts: Any, *args: Any) -> Any:
        if len(indexed) == 7:
            raise DatabaseError("the database went away")
        indexed.append(facts.sop_uid)
        return real_index_in(self, session, facts, *args)

    monkeypatch.setattr(Ingestor, "_index_in", index_then_fail)
    with pytest.raises(DatabaseError):
        ingestor.ingest_outputs(temps, calling_ae="MAMMO_NODE")
    assert generated_rows(db) == [], "one transaction: the first seven rows rolled back"
    assert stored_files(store) == before


def test_a_rerun_of_held_uids_goes_through_the_single_path(node: Any) -> None:
    """Output UIDs are deterministic per exam revision: a retried exam (the worker stopped after
    filing, before recording its result) files the same UIDs again, same bytes or new."""
    db, store, ingestor, exam = node
    outputs = outputs_of(exam)
    ingestor.ingest_outputs(temps_for(store, outputs), calling_ae="MAMMO_NODE")
    files = stored_files(store)
    again = ingestor.ingest_outputs(temps_for(store, outputs), calling_ae="MAMMO_NODE")
    assert {r.outcome for r in again} == {IngestOutcome.DUPLICATE}
    assert stored_files(store) == files and not list(store.tmp_dir.iterdir())
    rebuilt = outputs_of(exam)
    rebuilt[0].dataset.SeriesDescription = "rebuilt"
    newer = ingestor.ingest_outputs(temps_for(store, rebuilt), calling_ae="MAMMO_NODE")
    assert newer[0].outcome is IngestOutcome.REPLACED, "the node's own output replaces itself"
    assert len(stored_files(store)) == len(files), "the replaced file was deleted"
    rows = generated_rows(db)
    assert len(rows) == len(outputs)
    first = next(r for r in rows if r.sop_instance_uid == rebuilt[0].sop_instance_uid)
    assert b"rebuilt" in store.path(first.rel_path).read_bytes()


def test_batch_and_single_path_index_the_same_rows(node: Any, tmp_path: Path) -> None:
    """The batch indexes what ``ingest_file`` would: same columns on every row."""
    db, store, ingestor, exam = node
    outputs = outputs_of(exam)
    ingestor.ingest_outputs(temps_for(store, outputs), calling_ae="MAMMO_NODE")
    batch = {r.sop_instance_uid: r for r in generated_rows(db)}
    with db.session() as session:
        for row in session.scalars(select(Instance).where(Instance.origin == "generated")):
            session.delete(row)
    for temp in temps_for(store, outputs):  # what the worker did before the batch
        ingestor.ingest_file(temp, source="node", calling_ae="MAMMO_NODE", origin=Origin.GENERATED)
    single = {r.sop_instance_uid: r for r in generated_rows(db)}
    ignore = {"id", "rel_path", "received_at", "_sa_instance_state"}
    for uid, row in batch.items():
        a = {k: v for k, v in vars(row).items() if k not in ignore}
        b = {k: v for k, v in vars(single[uid]).items() if k not in ignore}
        assert a == b, uid
