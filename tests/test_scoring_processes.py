"""Several scoring processes (`scoring_processes`): each is its own supervised, lower-priority
child with its share of the CPUs, and every exam is scored exactly once among them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mammo_node.db.models import Exam, ExamEvent, Result
from tests.helpers.tools import storescu, wait_for


def _torch_threads(node: Any) -> list[int]:
    return [w.threads for w in node.workers]


def test_two_scoring_processes_share_the_cpus_and_score_each_exam_once(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    node = node_factory(
        score=True,
        model_bundle=tiny_bundle,
        device="cpu",
        scoring_processes=2,
        worker_poll_seconds=0.2,
    )
    assert [w.name for w in node.workers] == ["worker-supervisor", "worker-supervisor-2"]
    for worker in node.workers:
        wait_for(worker.ready.is_set, timeout=180)
    pids = {w.process.pid for w in node.workers}
    assert len(pids) == 2 and os.getpid() not in pids
    cpus = len(os.sched_getaffinity(0))
    wait_for(lambda: _torch_threads(node) == [max(1, cpus // 2)] * 2, timeout=30)
    ready, why = node._model_ready()
    assert ready and why == "model loaded (2 of 2 scoring processes)"
    # one loop per process in /readyz and mammo_loop_failures_total
    assert {"worker", "worker-2"} <= {h.name for h in node.loops}

    files = [path for exam in synth_exams for path in exam.files]
    assert storescu(node.scp.port, files).returncode == 0
    studies = [exam.study_uid for exam in synth_exams]

    def all_scored() -> bool:
        with node.db.session() as session:
            states = session.scalars(select(Exam.state).where(Exam.study_uid.in_(studies)))
            return sorted(states) == ["scored"] * len(studies)

    wait_for(all_scored, timeout=300, interval=0.5)
    with node.db.session() as session:
        claims = session.execute(
            select(Exam.study_uid, ExamEvent.reason)
            .join(ExamEvent, ExamEvent.exam_fk == Exam.id)
            .where(Exam.study_uid.in_(studies), ExamEvent.to_state == "scoring")
        ).all()
        results = session.execute(
            select(Exam.study_uid, func.count(Result.id))
            .join(Result, Result.exam_fk == Exam.id)
            .where(Exam.study_uid.in_(studies))
            .group_by(Exam.study_uid)
        ).all()
    assert sorted(study for study, _ in claims) == sorted(studies), "each exam claimed once"
    assert sorted(n for _, n in results) == [1] * len(studies), "each exam scored once"
    claimers = {reason.rsplit("/", 1)[-1] for _, reason in claims}
    assert claimers <= {str(pid) for pid in pids}, claims


def test_a_zombie_scoring_process_counts_as_ended() -> None:
    """A scoring process killed with its node is reparented and reaped later: until then a
    signal to it still succeeds, yet it holds its claim no more."""
    import subprocess
    import time

    from mammo_node.worker import _pid_alive

    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][:1] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    assert not _pid_alive(child.pid)  # exited, not yet reaped (no wait() so far)
    assert _pid_alive(os.getpid())
    child.wait()
    assert not _pid_alive(child.pid)


def test_a_claim_of_a_scoring_process_that_ended_after_start_is_taken_back(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    """The start-up check can run while the killed process is still exiting; the supervisor
    looks again every RECHECK_CLAIMS_SECONDS, so such a claim does not wait for the claim
    timeout."""
    import subprocess

    from mammo_node.db import repo
    from mammo_node.domain import ExamState
    from mammo_node.worker import worker_id_prefix
    from mammo_node.worker_process import RECHECK_CLAIMS_SECONDS

    node = node_factory(score=True, model_bundle=tiny_bundle, device="cpu", worker_poll_seconds=0.2)
    wait_for(node.worker.ready.is_set, timeout=180)
    exam = synth_exams[1]
    assert storescu(node.scp.port, exam.files).returncode == 0

    def state() -> str:
        with node.db.session() as session:
            return str(session.scalar(select(Exam.state).where(Exam.study_uid == exam.study_uid)))

    wait_for(lambda: state() == "scored", timeout=120, interval=0.2)
    ended = subprocess.Popen(["true"])
    ended.wait()
    with node.db.session() as session:  # as a process killed mid-scoring leaves it
        row = session.scalars(select(Exam).where(Exam.study_uid == exam.study_uid)).one()
        repo.set_exam_state(session, row, ExamState.SCORING, "claimed by a process now gone")
        row.claimed_by = f"{worker_id_prefix(node.settings)}{ended.pid}"
        row.attempts = 1
    wait_for(lambda: state() == "scored", timeout=3 * RECHECK_CLAIMS_SECONDS + 60, interval=0.2)
    with node.db.session() as session:
        reasons = session.scalars(
            select(ExamEvent.reason)
            .join(Exam, ExamEvent.exam_fk == Exam.id)
            .where(Exam.study_uid == exam.study_uid)
        ).all()
    assert any("claim released: the scoring process ended" in r for r in reasons), reasons


def test_a_result_in_the_scoring_process_wakes_its_supervisor() -> None:
    """The result flag rings a pipe the supervisor waits on beside the process's exit: a
    result is seen when it is set, not after a poll interval; a set with nobody reading
    never blocks the scoring process."""
    import multiprocessing
    import time

    from mammo_node.worker_process import RingingFlag

    context = multiprocessing.get_context("spawn")
    flag = RingingFlag(context)
    idle = context.Process(target=time.sleep, args=(120,))  # a process that is still running
    idle.start()
    try:
        assert not flag.wait_or_exit(idle.sentinel, 0.05), "nothing rang"
        setter = context.Process(target=flag.set)
        setter.start()
        setter.join(60)
        assert setter.exitcode == 0
        assert flag.wait_or_exit(idle.sentinel, 60.0), "the child's set rang"
        assert flag.is_set()
        assert not flag.wait_or_exit(idle.sentinel, 0.05), "the ring was read"
        for _ in range(100_000):  # far more than a pipe holds: set never blocks
            flag.set()
        assert flag.wait_or_exit(idle.sentinel, 0.05)
        flag.clear()
        idle.kill()
        started = time.monotonic()
        assert not flag.wait_or_exit(idle.sentinel, 60.0)
        assert time.monotonic() - started < 30, "the process's exit ended the wait"
    finally:
        idle.kill()
        idle.join(30)
