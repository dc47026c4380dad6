"""Nothing acknowledged is lost: SIGKILL the node while 4 associations are sending."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from sqlalchemy import select

from mammo_node.db.models import Exam, Instance
from mammo_node.db.session import Database
from tests.helpers.mg import four_view_exam, write
from tests.helpers.tools import wait_for

EXAMS = 12  # 48 instances


def dataset_sha256(path: Path) -> str:
    """Hash of the dataset bytes after the file meta: what crossed the wire."""
    meta = dcmread(path, stop_before_pixels=True).file_meta
    offset = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return hashlib.sha256(path.read_bytes()[offset:]).hexdigest()


def send_group(port: int, files: list[Path], acknowledged: dict[str, Path], lock: Any) -> None:
    """One association streaming files as they are; records each success."""
    ae = AE(ae_title="MODALITY")
    for path in files:
        meta = read_file_meta_info(path)
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        break
    assoc = ae.associate("127.0.0.1", port, ae_title="MAMMO_NODE")
    if not assoc.is_established:
        return
    for path in files:
        try:
            status = assoc.send_c_store(path)
        except (RuntimeError, ValueError, AttributeError):
            break
        if not status:
            break  # the node went away mid-transfer: not acknowledged
        if status.Status == 0x0000:
            with lock:
                acknowledged[str(read_file_meta_info(path).MediaStorageSOPInstanceUID)] = path
    if assoc.is_established:
        assoc.release()


def test_sigkill_mid_transfer_loses_no_acknowledged_instance(
    node_process: Any, tmp_path: Path
) -> None:
    files: list[Path] = []
    for i in range(EXAMS):
        files += write(four_view_exam(rows=768, columns=640, patient_id=f"P{i}"), tmp_path / "src")
    node = node_process(tmp_path / "data").start()

    acknowledged: dict[str, Path] = {}
    lock = threading.Lock()
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        threads = [
            threading.Thread(target=send_group, args=(node.port, files[i::4], acknowledged, lock))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acknowledged) >= len(files) // 3, timeout=120, interval=0.01)
        node.kill()  # SIGKILL part-way
        for thread in threads:
            thread.join(timeout=60)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert len(files) // 3 <= len(acknowledged) < len(files), "the kill came part-way"

    node.start()  # restart on the same data directory
    db = Database(f"sqlite:///{tmp_path / 'data' / 'mammo.db'}")
    store_root = tmp_path / "data" / "instances"
    with db.read() as session:
        rows = {r.sop_instance_uid: r for r in session.scalars(select(Instance))}
        for sop_uid, source in acknowledged.items():
            assert sop_uid in rows, f"acknowledged {sop_uid} missing from the database"
            stored = store_root / rows[sop_uid].rel_path
            assert stored.is_file(), f"acknowledged {sop_uid} missing on disk"
            assert dataset_sha256(stored) == dataset_sha256(source), "stored bytes differ"

    # the modality resends what was not acknowledged; grouping completes every exam
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        rest = [p for p in files if p not in set(acknowledged.values())]
        send_group(node.port, rest, acknowledged, lock)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert len(acknowledged) == len(files)

    def all_grouped() -> bool:  # every exam complete: READY, and then the node scores it
        with db.read() as session:
            states = [e.state for e in session.scalars(select(Exam))]
        return len(states) == EXAMS and set(states) <= {"ready", "scoring", "scored"}

    wait_for(all_grouped, timeout=60, interval=0.3)

    def all_hashed() -> bool:  # the grouping service hashes files off the receive path
        with db.read() as session:
            return all(r.sha256 for r in session.scalars(select(Instance)))

    wait_for(all_hashed, timeout=60, interval=0.3)
    with db.read() as session:
        for row in session.scalars(select(Instance)):
            on_disk = hashlib.sha256((store_root / row.rel_path).read_bytes()).hexdigest()
            assert on_disk == row.sha256
    assert node.stop() == 0, "clean shutdown on SIGTERM"
    db.dispose()
