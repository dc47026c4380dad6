"""Background loops survive any exception, count it and show it in /readyz until they recover."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from mammo_node.db.models import Instance
from mammo_node.observe.loops import LoopHealth, Loops
from tests.helpers.tools import storescu, wait_for


def _grouper_failures(text: str) -> float:
    found = re.search(
        r'mammo_loop_failures_total\{error="OSError",loop="grouper"\} ([0-9.]+)', text
    )
    return float(found.group(1)) if found else 0.0


def test_grouper_survives_an_io_error_while_hashing_and_readyz_says_so(
    node_factory: Any, synth_exams: list[Any]
) -> None:
    node = node_factory()
    base = f"http://127.0.0.1:{node.settings.http_port}"
    exam = synth_exams[0]
    assert storescu(node.settings.port, exam.files).returncode == 0

    def hashed() -> bool:
        with node.db.read() as session:
            rows = session.scalars(select(Instance.sha256)).all()
        return len(rows) == 4 and all(rows)

    wait_for(hashed)
    before = _grouper_failures(httpx.get(f"{base}/metrics").text)
    with node.db.read() as session:
        instance_id, rel_path = session.execute(
            select(Instance.id, Instance.rel_path).order_by(Instance.id)
        ).first()
    # a row whose file the node cannot even stat: OSError (ENAMETOOLONG) from the hashing step
    unreadable = rel_path.rsplit("/", 1)[0] + "/" + "x" * 300 + ".dcm"
    try:
        node.store.path(unreadable).is_file()
        pytest.skip("this Python's Path.is_file swallows ENAMETOOLONG")
    except OSError:
        pass

    def point_at(path: str) -> None:
        with node.db.session() as session:
            session.execute(
                update(Instance)
                .where(Instance.id == instance_id)
                .values(rel_path=path, sha256=None)
            )

    point_at(unreadable)

    def not_ready() -> dict[str, Any] | None:
        r = httpx.get(f"{base}/readyz")
        return r.json() if r.status_code == 503 else None

    answer = wait_for(not_ready)
    assert "grouper: failing" in answer["checks"]["loops"]["detail"]
    assert "OSError" in answer["checks"]["loops"]["detail"]
    wait_for(lambda: node.grouper.health.consecutive_failures >= 2)  # it keeps trying
    assert node.grouper.is_alive()
    assert _grouper_failures(httpx.get(f"{base}/metrics").text) >= before + 2

    point_at(rel_path)
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200)
    wait_for(hashed)
    assert node.grouper.health.consecutive_failures == 0


def test_a_loop_whose_thread_ended_is_reported_dead() -> None:
    loops = Loops()
    alive = {"grouper": True}
    grouper = loops.add(LoopHealth("grouper", is_alive=lambda: alive["grouper"]))
    loops.add(LoopHealth("exporter", started=True))
    assert loops.readiness() == (False, "grouper: not started yet")
    grouper.started = True
    assert loops.readiness() == (True, "running: grouper, exporter")
    alive["grouper"] = False
    ok, detail = loops.readiness()
    assert not ok and detail == "grouper: dead"
    stopped = LoopHealth("worker", is_alive=lambda: False, stopped=True)
    assert stopped.state() == (True, "worker: ok")  # stopped on purpose is not dead
