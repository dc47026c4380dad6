"""The node against real peers: dcmtk storescu/echoscu and pynetdicom as modalities,
on SQLite and on PostgreSQL, migrations applied from empty."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import func, select

from mammo_node.db.models import Association, Exam, Instance
from mammo_node.exams import exam_detail
from mammo_node.sop_classes import MG_PRESENTATION
from tests.helpers.mg import four_view_exam, mg_dataset, write
from tests.helpers.tools import dcmtk, storescu, wait_for


def exam_state(node: Any, study_uid: str) -> str | None:
    with node.db.read() as session:
        exam = session.scalars(select(Exam).where(Exam.study_uid == study_uid)).first()
        return exam.state if exam else None


def stored_count(node: Any) -> int:
    with node.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def pn_store(port: int, datasets: list[Any], *, aet: str = "PYNETDICOM") -> list[int]:
    ae = AE(ae_title=aet)
    for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_echo_with_echoscu_and_pynetdicom(node_factory: Any, db_url: str) -> None:
    node = node_factory(db_url)
    run = subprocess.run(
        [dcmtk("echoscu"), "-aec", "MAMMO_NODE", "127.0.0.1", str(node.scp.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    ae = AE()
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    with node.db.read() as session:
        rows = session.scalars(select(Association)).all()
        assert {r.calling_ae for r in rows} >= {"ECHOSCU", "PYNETDICOM"}


def test_four_views_become_ready_with_the_right_slots(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    node = node_factory(db_url)
    exam = four_view_exam()
    files = write(exam, tmp_path / "exam")
    run = storescu(node.scp.port, files)
    assert run.returncode == 0, run.stderr
    study = str(exam[0].StudyInstanceUID)
    wait_for(lambda: exam_state(node, study) == "ready", timeout=20)
    detail = exam_detail(node.db, study)
    expected = {f"{ds.ImageLaterality}-{ds.ViewPosition}": str(ds.SOPInstanceUID) for ds in exam}
    assert detail["slots"] == expected
    assert detail["not_scored"] == []
    # each file is stored exactly as received: same dataset bytes after the file meta
    for ds, path in zip(exam, files, strict=True):
        with node.db.read() as session:
            row = session.scalars(
                select(Instance).where(Instance.sop_instance_uid == str(ds.SOPInstanceUID))
            ).one()
            stored = dcmread(node.store.path(row.rel_path))
            assert row.calling_ae == "MODALITY" and row.slot is not None
        assert stored.PixelData == dcmread(path).PixelData


def test_three_views_become_partial_naming_the_missing_view(node_factory: Any, db_url: str) -> None:
    node = node_factory(db_url, stable_seconds=1.5)
    exam = four_view_exam()[:3]
    assert pn_store(node.scp.port, exam) == [0, 0, 0]
    study = str(exam[0].StudyInstanceUID)
    wait_for(lambda: exam_state(node, study) == "partial", timeout=20)
    detail = exam_detail(node.db, study)
    assert detail["missing_views"] == ["R-MLO"]
    assert detail["slots"]["R-MLO"] is None
    assert "R-MLO" in detail["reason"]


def test_late_image_reopens_and_replacement_marks_changed(node_factory: Any, db_url: str) -> None:
    node = node_factory(db_url, stable_seconds=1.0)
    exam = four_view_exam()
    study = str(exam[0].StudyInstanceUID)
    assert pn_store(node.scp.port, exam[:3]) == [0, 0, 0]
    wait_for(lambda: exam_state(node, study) == "partial", timeout=20)
    assert pn_store(node.scp.port, exam[3:]) == [0]  # the late R-MLO
    wait_for(lambda: exam_state(node, study) == "ready", timeout=20)
    detail = exam_detail(node.db, study)
    assert any("late image" in e["reason"] for e in detail["events"])
    revision = detail["revision"]

    # identical bytes again: a no-op success
    assert pn_store(node.scp.port, exam[:1]) == [0]
    assert exam_detail(node.db, study)["revision"] == revision
    assert exam_state(node, study) == "ready"
    # same SOP Instance UID, different pixels: replaces, exam changed and re-opened
    changed = exam[0].copy()
    changed.PixelData = bytes(len(changed.PixelData))
    assert pn_store(node.scp.port, [changed]) == [0]
    detail = exam_detail(node.db, study)
    assert detail["revision"] == revision + 1
    assert any("image replaced" in e["reason"] for e in detail["events"])
    assert stored_count(node) == 4
    files = list((node.store.root / study).rglob("*.dcm"))
    assert len(files) == 4  # the replaced file was removed after the new row committed
    wait_for(lambda: exam_state(node, study) == "ready", timeout=20)


def test_every_storage_class_is_accepted_and_other_services_refused(node_factory: Any) -> None:
    node = node_factory()
    ae = AE()
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MG_PRESENTATION)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {MG_PRESENTATION, CTImageStorage}


def test_allow_list_rejects_unknown_calling_ae(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory(allowed_peers=["MODALITY@127.0.0.1"])
    files = write(four_view_exam()[:1], tmp_path / "one")
    assert storescu(node.scp.port, files, aet="MODALITY").returncode == 0
    refused = storescu(node.scp.port, files, aet="STRANGER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout
    wrong_called = storescu(node.scp.port, files, aet="MODALITY", aec="SOMEONE_ELSE")
    assert wrong_called.returncode != 0
    with node.db.read() as session:
        rejected = session.scalars(select(Association).where(Association.accepted.is_(False)))
        reasons = {r.calling_ae: r.reject_reason for r in rejected}
    assert "not in allowed_peers" in reasons["STRANGER"]
    assert "called AE 'SOMEONE_ELSE'" in reasons["MODALITY"]
    assert stored_count(node) == 1


def _send_raw(port: int, path: Path) -> Any:
    """C-STORE a file's bytes as they are (pynetdicom streams them without decoding)."""
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import _config

    meta = read_file_meta_info(path)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE()
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="MAMMO_NODE")
        assert assoc.is_established
        status = assoc.send_c_store(path)
        assoc.release()
        return status
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def _meta_end(path: Path) -> int:
    return 132 + 12 + int(dcmread(path).file_meta.FileMetaInformationGroupLength)


def _dataset_bytes(path: Path) -> bytes:
    return path.read_bytes()[_meta_end(path) :]


def _part10_with_body(meta_from: Path, body: bytes, target: Path) -> Path:
    """A Part-10 file whose dataset bytes are ``body`` (file meta copied from another)."""
    target.write_bytes(meta_from.read_bytes()[: _meta_end(meta_from)] + body)
    return target


def test_bad_input_gets_a_clear_status_and_loses_nothing(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    node = node_factory(db_url)
    good = four_view_exam()
    assert pn_store(node.scp.port, good) == [0, 0, 0, 0]
    before = {p: p.read_bytes() for p in node.store.root.rglob("*.dcm")}

    # a corrupt dataset: the sender's file was cut short in the middle of the pixel data
    template = write([mg_dataset()], tmp_path / "tpl")[0]
    body = _dataset_bytes(template)
    corrupt = _part10_with_body(template, body[: len(body) // 2], tmp_path / "cut")
    status = _send_raw(node.scp.port, corrupt)
    assert status.Status == 0xC210 and "truncated" in status.ErrorComment
    # garbage where the dataset should be
    garbage = _part10_with_body(template, bytes(range(256)) * 4, tmp_path / "garbage")
    status = _send_raw(node.scp.port, garbage)
    assert status.Status in (0xC210, 0xC220, 0xC221)

    # a dataset without SOP Instance UID (the request still names one)
    missing = mg_dataset()
    uid = missing.SOPInstanceUID
    del missing.SOPInstanceUID
    missing.file_meta.MediaStorageSOPInstanceUID = uid
    path = tmp_path / "missing.dcm"
    missing.save_as(path, enforce_file_format=True)
    status = _send_raw(node.scp.port, path)
    assert status.Status == 0xC220 and "SOPInstanceUID is missing" in status.ErrorComment

    # a path traversal attempt in the Study Instance UID
    evil = mg_dataset(StudyInstanceUID="../../../../tmp/evil")
    status = pn_store_status(node.scp.port, evil)
    assert status.Status == 0xC221 and "not a valid DICOM UID" in status.ErrorComment
    assert not list(Path("/tmp").glob("evil*"))

    after = {p: p.read_bytes() for p in node.store.root.rglob("*.dcm")}
    assert after == before, "every acknowledged instance is intact"
    assert stored_count(node) == 4
    assert list(node.store.tmp_dir.iterdir()) == []


def pn_store_status(port: int, ds: Any) -> Any:
    ae = AE()
    ae.add_requested_context(ds.SOPClassUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MAMMO_NODE")
    status = assoc.send_c_store(ds)
    assoc.release()
    return status


def test_nema_mg1_files_are_classified_and_the_undecodable_one_reported(
    node_factory: Any, realdata: Path
) -> None:
    node = node_factory()
    folder = realdata / "nema-wg04-MG1__robyoung-dicom-test-files"
    assert storescu(node.scp.port, [folder / "MG1_J2KI"], "-xw").returncode == 0  # JPEG 2000
    assert storescu(node.scp.port, [folder / "MG1_JPLY"], "-xx").returncode == 0  # JPEG 12-bit
    study = str(dcmread(folder / "MG1_J2KI", stop_before_pixels=True).StudyInstanceUID)
    wait_for(lambda: exam_state(node, study) == "partial", timeout=60)
    detail = exam_detail(node.db, study)
    j2k = str(dcmread(folder / "MG1_J2KI", stop_before_pixels=True).SOPInstanceUID)
    jply = str(dcmread(folder / "MG1_JPLY", stop_before_pixels=True).SOPInstanceUID)
    assert detail["slots"]["L-MLO"] == j2k
    (kept,) = detail["not_scored"]
    assert kept["sop_instance_uid"] == jply and kept["reason"] == "undecodable"
    assert "JPEG Extended" in kept["detail"]
    by_uid = {i["sop_instance_uid"]: i for i in detail["instances"]}
    assert by_uid[j2k]["laterality_source"] == "Laterality"
    assert by_uid[j2k]["view_source"] == "ViewPosition"
    assert by_uid[j2k]["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.91"
    assert by_uid[jply]["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.51"


@pytest.mark.parametrize(
    ("syntax", "flag"),
    [
        ("1.2.840.10008.1.2.4.90", "-xv"),  # JPEG 2000 lossless
        ("1.2.840.10008.1.2.4.80", "-xt"),  # JPEG-LS lossless
        ("1.2.840.10008.1.2.4.70", "-xs"),  # JPEG lossless SV1
        ("1.2.840.10008.1.2.5", "-xr"),  # RLE
    ],
)
def test_compressed_transfer_syntaxes_are_kept_as_received(
    node_factory: Any, tmp_path: Path, syntax: str, flag: str
) -> None:
    node = node_factory()
    ds = mg_dataset(rows=40, columns=32, study_uid=generate_uid())
    if syntax == "1.2.840.10008.1.2.4.70":  # pydicom has no JPEG lossless encoder: dcmtk's
        plain = write([ds], tmp_path / "plain")[0]
        path = tmp_path / "c" / "jpeg-lossless.dcm"
        path.parent.mkdir()
        subprocess.run([dcmtk("dcmcjpeg"), "+e1", str(plain), str(path)], check=True)
    else:
        ds.compress(syntax, generate_instance_uid=False)
        path = write([ds], tmp_path / "c")[0]
    run = storescu(node.scp.port, [path], flag)
    assert run.returncode == 0, run.stderr
    study = str(ds.StudyInstanceUID)
    wait_for(lambda: exam_detail(node.db, study)["instances"][0]["pixel_check"] == "ok")
    (instance,) = exam_detail(node.db, study)["instances"]
    assert instance["transfer_syntax_uid"] == syntax


def test_wrapped_nyu_exam_and_mias_films_are_received_and_classified(
    node_factory: Any, realdata: Path, tmp_path: Path
) -> None:
    from mammo_node.synth import wrap

    node = node_factory(stable_seconds=2.0)
    nyu = wrap.wrap_nyu_exam(realdata / "nyu-gmic-exam0__nyukat-GMIC")
    mias = [
        ds
        for ds, _ in wrap.wrap_mias(
            realdata / "mini-mias-subset__theidentity-MammogramVisualization",
            ["mdb001", "mdb002", "mdb023", "mdb024"],
        )
    ]
    files = wrap.write_datasets(nyu + mias, tmp_path / "wrapped")
    assert storescu(node.scp.port, files).returncode == 0

    study = str(nyu[0].StudyInstanceUID)
    wait_for(lambda: exam_state(node, study) == "ready", timeout=60)
    detail = exam_detail(node.db, study)
    assert detail["slots"] == {
        f"{ds.ImageLaterality}-{ds.ViewPosition}": str(ds.SOPInstanceUID) for ds in nyu
    }
    mias_studies = {str(ds.StudyInstanceUID) for ds in mias}
    for mias_study in mias_studies:
        wait_for(lambda s=mias_study: exam_state(node, s) == "partial", timeout=60)
        film = exam_detail(node.db, mias_study)
        assert film["not_scored"] == []  # digitised film is a candidate...
        assert {i["view"] for i in film["instances"]} == {"MLO"}
        assert {"L-CC", "R-CC"} <= set(film["missing_views"])  # ...but MIAS has no CC views


# --- stop: nothing of the listener runs (or logs) after it returns ---------------------------
def _association_threads(server: Any) -> list[threading.Thread]:
    """The threads of a listener's associations: each acceptor and its DUL provider."""
    acceptors = server.active_associations
    return [*acceptors, *(assoc.dul for assoc in acceptors)]


def _audited_ends(node: Any) -> list[str | None]:
    with node.db.read() as session:
        rows = session.scalars(select(Association).where(Association.accepted.is_(True))).all()
        return [row.end_reason if row.ended_at is not None else None for row in rows]


def test_stop_ends_idle_associations_and_joins_their_threads(node_factory: Any) -> None:
    """An association open at stop, and a connection that never sent its request: both are
    ended at once (not waited for), and no thread of theirs is left when stop returns."""
    node = node_factory()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    server = node.scp.server
    wait_for(lambda: node.scp.open_associations() == 1)
    with socket.create_connection(("127.0.0.1", node.scp.port), timeout=10) as silent:
        wait_for(lambda: len(server.active_associations) == 2)
        threads = _association_threads(server)
        assert len(threads) == 4
        started = time.monotonic()
        node.scp.stop()
        assert time.monotonic() - started < 10, "idle associations are not waited for"
        alive = [t.name for t in threading.enumerate() if t in threads]
        assert alive == [], "association threads outlived stop"
        assert server.active_associations == []
        assert silent.recv(1) == b"", "the silent connection was closed"
    assert _audited_ends(node) == ["aborted"], "its audit row was closed before stop returned"
    wait_for(lambda: not assoc.is_alive(), timeout=10)
    assert assoc.is_aborted, "the modality was told (A-ABORT)"


def test_stop_lets_a_c_store_in_progress_be_filed_and_answered(node_factory: Any) -> None:
    node = node_factory(max_pdu_size=16384)
    ds = mg_dataset(rows=512, columns=256)  # 256 kB: 16 P-DATA PDUs of 16 kB
    sending = threading.Event()

    def slow_modality(event: evt.Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sending.set()
            time.sleep(0.1)  # the dataset takes ~1.6 s to arrive

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MG_PRESENTATION)
    assoc = ae.associate(
        "127.0.0.1",
        node.scp.port,
        ae_title="MAMMO_NODE",
        evt_handlers=[(evt.EVT_PDU_SENT, slow_modality)],
    )
    assert assoc.is_established
    server = node.scp.server
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.append(int(assoc.send_c_store(ds).Status)))
    sender.start()
    assert sending.wait(10)
    threads = _association_threads(server)
    node.scp.stop()
    sender.join(30)
    assert statuses == [0x0000], "the C-STORE under way at stop was answered Success"
    assert stored_count(node) == 1
    assert [t.name for t in threading.enumerate() if t in threads] == []
    assert _audited_ends(node) == ["aborted"]


# --- TCP: no Nagle stall per C-STORE (mammo_node.tcp) ---------------------------------------
def _no_delay(sock: Any) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_both_ends_of_the_nodes_associations_send_without_delay(node_factory: Any) -> None:
    """The listener's accepted sockets and the SCU's (exporter, send, echo) have TCP_NODELAY:
    with Nagle on, each C-STORE's last PDU waited for the peer's delayed ACK (~40 ms each)."""
    from mammo_node.delivery.scu import Peer, _new_ae, open_association

    node = node_factory()
    plain = AE(ae_title="MODALITY")  # pynetdicom's own requestor: Nagle left on
    plain.add_requested_context(Verification)
    baseline = plain.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert baseline.is_established
    try:
        assert not _no_delay(baseline.dul.socket.socket), "the check can tell the two apart"
        ae = _new_ae("MAMMO_NODE")
        ae.add_requested_context(Verification)
        ours = open_association(ae, Peer("127.0.0.1", node.scp.port, "MAMMO_NODE"))
        assert ours.is_established
        try:
            assert _no_delay(ours.dul.socket.socket), "the SCU's socket"
            wait_for(lambda: len(node.scp.server.active_associations) == 2)
            for acceptor in node.scp.server.active_associations:
                assert _no_delay(acceptor.dul.socket.socket), "the listener's socket"
            assert ours.send_c_echo().Status == 0
        finally:
            ours.release()
    finally:
        baseline.release()
