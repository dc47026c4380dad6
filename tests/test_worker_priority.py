"""Receiving comes first: the scoring process runs below the listeners (niceness, SCHED_IDLE,
fewer torch threads while an association is open or a STOW-RS upload is in flight), in `serve`
and in `mammo-node worker`."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from mammo_node.db.models import Instance
from mammo_node.domain import PixelCheck
from tests.helpers.hostile import big_image
from tests.helpers.mg import mg_dataset
from tests.helpers.tools import storescu, wait_for

SCHED_IDLE = 5


def _stat(pid: int, tid: int) -> list[str]:
    """Fields of /proc/<pid>/task/<tid>/stat from field 3 on (after the command name)."""
    text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def test_the_scoring_process_runs_at_the_configured_niceness_and_policy(
    node_factory: Any, tiny_bundle: Path
) -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    node = node_factory(
        score=True, model_bundle=tiny_bundle, device="cpu", worker_nice=5, worker_sched_idle=True
    )
    wait_for(node.worker.ready.is_set, timeout=120)
    pid = node.worker.process.pid
    expected = min(19, before + 5)
    tids = _threads(pid)
    assert len(tids) > 1, "torch's threads have started"
    for tid in tids:
        fields = _stat(pid, tid)
        assert int(fields[16]) == expected, f"thread {tid}: nice {fields[16]}"  # field 19
        assert int(fields[38]) == SCHED_IDLE, f"thread {tid}: policy {fields[38]}"  # field 41
    # the listeners keep their priority
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
    assert os.sched_getscheduler(0) != SCHED_IDLE


def test_the_pixel_check_decoder_runs_at_the_scoring_niceness(
    node_factory: Any, tmp_path: Path
) -> None:
    """Compressed images are decoded (pixel check) in a child process beside receiving: it
    runs below the listeners, at worker_nice, as the scoring process does."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    node = node_factory(worker_nice=5)
    ds = mg_dataset()
    ds.compress(RLELossless)
    path = tmp_path / "rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    run = storescu(node.scp.port, [path], "-xr")  # propose RLE
    assert run.returncode == 0, run.stderr

    def checked() -> PixelCheck | None:
        with node.db.read() as session:
            state = session.scalar(
                select(Instance.pixel_check).where(Instance.sop_instance_uid == ds.SOPInstanceUID)
            )
        return None if state in (None, PixelCheck.PENDING) else state

    assert wait_for(checked, timeout=60) == PixelCheck.OK
    pids = node.grouper.grouper.sandbox.child_pids()
    assert pids, "the RLE image was decoded in the decoder process"
    expected = min(19, before + 5)
    for pid in pids:
        for tid in _threads(pid):
            assert int(_stat(pid, tid)[16]) == expected, f"decoder thread {tid}"  # field 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == before, "the listeners keep their priority"


BOUNDARY = "slow-stow"


@contextmanager
def _association(node: Any) -> Iterator[None]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    try:
        yield
    finally:
        assoc.release()


@contextmanager
def _slow_stow(node: Any, instance: Path) -> Iterator[socket.socket]:
    """A STOW-RS POST of ``instance`` whose body has come only in part; the rest is sent,
    and the answer read, when the block ends (unless the block closed the socket)."""
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + instance.read_bytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY}\r\n'
        f"Accept: application/dicom+json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", node.web.port), timeout=30) as sock:
        sock.sendall(head.encode() + body[:200])
        yield sock
        if sock.fileno() != -1:
            sock.sendall(body[200:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_a_stow_upload_in_flight_counts_as_receiving(
    node_factory: Any, synth_exams: list[Any]
) -> None:
    node = node_factory(loopback_without_token=True)
    assert node.receiving() == 0
    with _slow_stow(node, synth_exams[0].files[0]):
        wait_for(lambda: node.receiving() == 1, timeout=10)
        assert node.receiving.uploads == 1 and node.scp.open_associations() == 0
        with _association(node):  # both kinds add up
            wait_for(lambda: node.receiving() == 2, timeout=10)
        wait_for(lambda: node.receiving() == 1, timeout=10)
    assert node.receiving() == 0, "the upload was answered: nothing is being received"
    # a client that drops its connection mid-body no longer counts either
    with _slow_stow(node, synth_exams[0].files[1]) as sock:
        wait_for(lambda: node.receiving() == 1, timeout=10)
        sock.close()
    wait_for(lambda: node.receiving() == 0, timeout=10)


@pytest.mark.parametrize("receiving", ["association", "stow"])
def test_scoring_threads_drop_while_the_node_receives(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any], receiving: str
) -> None:
    node = node_factory(
        score=True,
        model_bundle=tiny_bundle,
        device="cpu",
        worker_threads=2,
        worker_threads_receiving=1,
        worker_poll_seconds=0.2,
        loopback_without_token=True,
    )
    wait_for(node.worker.ready.is_set, timeout=120)
    wait_for(lambda: node.worker.threads == 2, timeout=30)
    if receiving == "association":
        incoming: Any = _association(node)
    else:
        incoming = _slow_stow(node, synth_exams[0].files[0])
    with incoming:
        wait_for(lambda: node.worker.threads == 1, timeout=30)
        if receiving == "association":
            assert node.scp.open_associations() == 1
        else:
            assert node.receiving.uploads == 1
    wait_for(lambda: node.worker.threads == 2, timeout=30)


def _exam_row(db: Path, study_uid: str) -> tuple[str, int, str] | None:
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute(
            "SELECT state, attempts, claimed_by FROM exams WHERE study_uid = ?", (study_uid,)
        ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]), str(row[2]))


def test_worker_command_scores_in_a_child_whose_death_costs_one_attempt(
    node_process: Any, tiny_bundle: Path, synth_exams: list[Any], tmp_path: Path
) -> None:
    """`mammo-node worker` claims in a child process; SIGKILL on that child leaves the
    command running, releases the claim as one used attempt, and a new child scores it."""
    node = node_process(
        tmp_path / "data",
        MAMMO_SERVE_WORKER="false",
        MAMMO_MODEL_BUNDLE=str(tiny_bundle),
        MAMMO_DEVICE="cpu",
    )
    node.start()
    exam = synth_exams[2]
    # 7-megapixel views: scoring takes long enough to be caught in the act
    files = []
    for i, path in enumerate(exam.files):
        big = tmp_path / f"big{i}.dcm"
        big_image(dcmread(path), 3000, 2400, seed=i).save_as(big, enforce_file_format=True)
        files.append(big)
    assert storescu(node.port, files).returncode == 0
    db = node.data_dir / "mammo.db"
    wait_for(lambda: (_exam_row(db, exam.study_uid) or ("",))[0] == "ready", timeout=60)

    command = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mammo-node"),
            "worker",
            "--data-dir",
            str(node.data_dir),
        ],
        env=node.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        state, attempts, claimed_by = wait_for(
            lambda: (row := _exam_row(db, exam.study_uid)) and row[0] == "scoring" and row,
            timeout=120,
            interval=0.01,
        )
        assert (state, attempts) == ("scoring", 1)
        child = int(claimed_by.rsplit("/", 1)[1])
        assert child != command.pid
        assert int(_stat(child, child)[1]) == command.pid, "the claim is held by its child"
        os.kill(child, signal.SIGKILL)

        def scored() -> bool:
            row = _exam_row(db, exam.study_uid)
            assert row is None or row[0] != "failed", row
            return row is not None and row[0] == "scored"

        wait_for(scored, timeout=180, interval=0.5)
        assert command.poll() is None, "the command survived its scoring process"
        with sqlite3.connect(db) as conn:
            reasons = [
                r[0]
                for r in conn.execute(
                    "SELECT reason FROM exam_events JOIN exams ON exams.id = exam_events.exam_fk "
                    "WHERE exams.study_uid = ? ORDER BY exam_events.id",
                    (exam.study_uid,),
                )
            ]
            (worker,) = conn.execute("SELECT worker FROM results").fetchone()
        assert any(
            "claim released: the scoring process died (killed by SIGKILL) (attempt 1 of 3)" in r
            for r in reasons
        ), reasons
        rescored_by = int(worker.rsplit("/", 1)[1])
        assert rescored_by not in (child, command.pid), "a new child scored the second attempt"
    finally:
        command.terminate()
        assert command.wait(timeout=90) == 0
