"""Receiving comes first: the scoring process runs below the listeners (niceness, SCHED_IDLE,
fewer torch threads while an association is open), in `serve` and in `mammo-node worker`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.helpers.hostile import big_image
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


def test_scoring_threads_drop_while_an_association_is_open(
    node_factory: Any, tiny_bundle: Path
) -> None:
    node = node_factory(
        score=True,
        model_bundle=tiny_bundle,
        device="cpu",
        worker_threads=2,
        worker_threads_receiving=1,
        worker_poll_seconds=0.2,
    )
    wait_for(node.worker.ready.is_set, timeout=120)
    wait_for(lambda: node.worker.threads == 2, timeout=30)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    try:
        wait_for(lambda: node.worker.threads == 1, timeout=30)
        assert node.scp.open_associations() == 1
    finally:
        assoc.release()
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
