"""Model lifecycle on a running node (SQLite and PostgreSQL): bundles side by side, a shadow
bundle's scores appear beside the active ones without anything sent - computed in a child
process that may die without taking the node along -, activation without a restart, and every
result records the bundle's content hash."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mammo_node.db.models import Exam, Instance, Result
from mammo_node.db.session import Database
from tests.helpers.nodeops import exam_json, scoring_node
from tests.helpers.tools import storescu, wait_for


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny bundle (other seeded weights, version 0.0.2): other scores."""
    import torch

    from mammo_node.ml.bundle import BundleManifest, save_bundle
    from mammo_node.ml.models import build_model
    from mammo_node.ml.preprocess import PreprocessSettings

    torch.manual_seed(1)
    holistic = build_model(arch="resnet18")
    attention = build_model(arch="resnet18")
    out = tmp_path_factory.mktemp("bundle2") / "tiny2"
    save_bundle(
        out,
        holistic=holistic,
        attention=attention,
        manifest=BundleManifest(
            name="mammo-node-test-random",
            version="0.0.2",
            architecture="resnet18",
            preprocess=PreprocessSettings(input_size=64, roi_size=48, roi_scale=1.5),
            is_demo=True,
        ),
    )
    return out


def _sha(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def _results(db_url: str, study_uid: str) -> list[tuple[str, str]]:
    db = Database(db_url)
    try:
        with db.read() as session:
            return [
                (r.model_version, r.bundle_sha256)
                for r in session.scalars(
                    select(Result)
                    .join(Exam, Result.exam_fk == Exam.id)
                    .where(Exam.study_uid == study_uid)
                    .order_by(Result.id)
                )
            ]
    finally:
        db.dispose()


def _shadow_children(node: Any) -> list[int]:
    """The shadow scoring processes the node started, in order (from its log)."""
    found = re.findall(r"shadow scoring process (\d+) started", node.log.read_text())
    return [int(pid) for pid in found]


def _parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def test_shadow_scores_beside_active_and_activation_without_restart(
    node_process: Any,
    tmp_path: Path,
    tiny_bundle: Path,
    second_bundle: Path,
    synth_exams: list[Any],
    db_url: str,
) -> None:
    node = scoring_node(node_process, tmp_path / "data", tiny_bundle, db_url=db_url).start()
    first, second, third = synth_exams

    def scored(exam: Any) -> dict[str, Any]:
        assert storescu(node.port, exam.files).returncode == 0
        return wait_for(
            lambda: (d := exam_json(node, exam.study_uid))["state"] == "scored" and d, timeout=180
        )

    # no registry yet: MAMMO_MODEL_BUNDLE scores, and the result names its content hash
    scored(first)
    assert _results(db_url, first.study_uid) == [("0.0.1", _sha(tiny_bundle))]

    added = json.loads(node.cli("models", "add", str(tiny_bundle), "--json").stdout)
    assert added["manifest_sha256"] == _sha(tiny_bundle) and added["role"] == "installed"
    node.cli("models", "add", str(second_bundle))
    node.cli("models", "activate", "mammo-node-test-random:0.0.1")
    node.cli("models", "shadow", _sha(second_bundle)[:12])
    listed = {
        b["version"]: b["role"] for b in json.loads(node.cli("models", "list", "--json").stdout)
    }
    assert listed == {"0.0.1": "active", "0.0.2": "shadow"}
    refused = node.cli("models", "shadow", "mammo-node-test-random:0.0.1", check=False)
    assert refused.returncode == 2 and "active" in refused.stderr

    def compared(*exams: Any) -> list[dict[str, Any]]:
        rows = json.loads(node.cli("models", "compare", "--json").stdout)
        return rows if {r["study_uid"] for r in rows} == {e.study_uid for e in exams} else []

    # the shadow bundle scores the exam scored before it was set, in a child process: the
    # node's own process never loads torch (the child imports it and loads the bundle first:
    # minutes on a loaded machine, hence the long waits)
    wait_for(lambda: compared(first), timeout=360, interval=1)
    (child,) = _shadow_children(node)
    assert _parent_of(child) == node.proc.pid
    assert "libtorch" not in Path(f"/proc/{node.proc.pid}/maps").read_text()

    if db_url.startswith("sqlite"):  # process supervision: the database plays no part
        # the shadow process dies (between exams): the node goes on and starts another one,
        # which scores the next exam
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: len(_shadow_children(node)) == 2, timeout=120, interval=0.5)
        assert node.proc.poll() is None
    scored(second)
    rows = wait_for(lambda: compared(first, second), timeout=360, interval=1)
    for row in rows:
        assert row["shadow"]["failure"] is None
        assert row["active"]["model"] == "mammo-node-test-random 0.0.1"
        assert row["shadow"]["model"] == "mammo-node-test-random 0.0.2"
        assert row["shadow"]["bundle_sha256"] == _sha(second_bundle)
        assert row["active"]["exam_score"] != pytest.approx(row["shadow"]["exam_score"])
    # the shadow sent nothing and wrote no objects: one result and its 15 outputs per exam
    assert exam_json(node, second.study_uid)["result"]["model"]["version"] == "0.0.1"
    db = Database(db_url)
    try:
        with db.read() as session:
            outputs = session.scalar(
                select(func.count())
                .select_from(Instance)
                .join(Exam, Instance.exam_fk == Exam.id)
                .where(Exam.study_uid == second.study_uid, Instance.origin == "generated")
            )
        assert outputs == 15
    finally:
        db.dispose()
    monitor = httpx.get(f"http://127.0.0.1:{node.http_port}/api/monitor", timeout=60).json()
    (pair,) = monitor["shadow"]
    assert pair["exams"] == 2 and pair["shadow"] == "mammo-node-test-random 0.0.2"

    # activation without a restart: the next exam is scored by the new bundle
    node.cli("models", "activate", "mammo-node-test-random:0.0.2")
    detail = scored(third)
    assert detail["result"]["model"]["version"] == "0.0.2"
    assert _results(db_url, third.study_uid) == [("0.0.2", _sha(second_bundle))]
    assert "switched from" in node.log.read_text()
    removed = node.cli("models", "remove", "mammo-node-test-random:0.0.2", check=False)
    assert removed.returncode == 2 and "active" in removed.stderr
    node.cli("models", "remove", "mammo-node-test-random:0.0.1")
    assert len(json.loads(node.cli("models", "list", "--json").stdout)) == 1
    assert node.stop() == 0


def test_an_exam_the_shadow_process_died_on_is_recorded_and_not_tried_again(db_url: str) -> None:
    from mammo_node.db.models import ModelBundleRow, Patient
    from mammo_node.db.session import upgrade
    from mammo_node.observe.monitor import shadow_comparisons
    from mammo_node.operations.models import compare, next_shadow_work, record_shadow_failure

    upgrade(db_url)
    db = Database(db_url)
    sha = "ab" * 32
    try:
        with db.session() as session:
            patient = Patient(patient_key="p1")
            exam = Exam(study_uid="1.2.3.4", patient=patient, state="scored")
            session.add_all(
                [
                    patient,
                    exam,
                    ModelBundleRow(
                        name="shadow",
                        version="2",
                        manifest_sha256=sha,
                        path="/nowhere",
                        role="shadow",
                    ),
                ]
            )
            session.flush()
            session.add(
                Result(
                    exam_fk=exam.id,
                    exam_revision=0,
                    model_name="active",
                    model_version="1",
                    exam_score=0.5,
                    sr_sop_instance_uid="1.2.3.4.5",
                    images={"1.2.3.4.9": {"slot": "L-CC"}},
                )
            )
        work = next_shadow_work(db, sha)
        assert work is not None and work.study_uid == "1.2.3.4"
        assert work.images == {"1.2.3.4.9": "L-CC"}
        why = "the shadow scoring process died (killed by SIGKILL)"
        assert record_shadow_failure(db, work.result_id, sha, why)
        assert not record_shadow_failure(db, work.result_id, sha, why)  # one row per exam
        assert next_shadow_work(db, sha) is None  # not tried again by that bundle
        assert next_shadow_work(db, "cd" * 32) is not None  # another bundle still scores it
        (row,) = compare(db)
        assert row["shadow"] == {
            "model": "shadow 2",
            "bundle_sha256": sha,
            "exam_score": None,
            "verdicts": {},
            "failure": why,
        }
        (pair,) = shadow_comparisons(db)
        assert pair.exams == 0 and pair.failed == 1 and pair.shadow == "shadow 2"
    finally:
        db.dispose()
