"""Operating the scoring loop: poisoned exams, rescoring, separate workers on PostgreSQL,
return to sender, warning statuses, dead letters. Real node, real models, real DICOM peers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import create_engine, select, text

from mammo_node.db.models import Instance
from mammo_node.delivery.destinations import add_destination
from mammo_node.delivery.exporter import retry
from mammo_node.exams import exam_detail
from mammo_node.ml.loading import load_scorer
from mammo_node.worker import Worker, rescore
from mammo_node.writers import sop_classes_for_outputs
from tests.helpers.tools import free_port, storescu, wait_for


class PeerSCP:
    """A real C-STORE SCP (pynetdicom) that answers every store with ``status``."""

    def __init__(self, ae_title: str, status: int = 0x0000, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = status
        self.received: list[str] = []
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        for sop_class in sop_classes_for_outputs():
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )

    def _store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status

    def stop(self) -> None:
        self.server.shutdown()


def stored_path(node: Any, sop_uid: str) -> Path:
    with node.db.read() as session:
        rel = session.scalars(
            select(Instance.rel_path).where(Instance.sop_instance_uid == sop_uid)
        ).one()
    return Path(node.store.path(rel))


def state_of(node: Any, study: str) -> str:
    return str(exam_detail(node.db, study)["state"])


def test_a_poisoned_exam_is_parked_with_its_error(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    node = node_factory(score=False, max_attempts=2, model_bundle=tiny_bundle)
    exam = synth_exams[0]
    assert storescu(node.scp.port, exam.files).returncode == 0
    wait_for(lambda: state_of(node, exam.study_uid) == "ready", timeout=30)
    # the disk goes bad under one stored image after grouping accepted it
    path = stored_path(node, exam_detail(node.db, exam.study_uid)["slots"]["L-CC"])
    path.write_bytes(path.read_bytes()[:2000])

    worker = Worker(node.settings, node.db, node.ingestor, lambda: load_scorer(node.settings))
    assert worker.run_once()
    assert state_of(node, exam.study_uid) == "ready"  # first failure: retried
    assert worker.run_once()
    detail = exam_detail(node.db, exam.study_uid)
    assert detail["state"] == "failed"
    assert "parked after 2 failed attempts" in detail["reason"]
    assert detail["last_error"]
    assert not worker.run_once(), "a parked exam is not claimed again"


def test_rescore_writes_a_new_result_whose_report_names_the_previous_one(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    node = node_factory(score=True, model_bundle=tiny_bundle)
    exam = synth_exams[1]
    assert storescu(node.scp.port, exam.files).returncode == 0
    first = wait_for(
        lambda: (d := exam_detail(node.db, exam.study_uid))["state"] == "scored" and d["result"],
        timeout=120,
    )
    rescore(node.db, exam.study_uid)
    second = wait_for(
        lambda: (
            (d := exam_detail(node.db, exam.study_uid))["state"] == "scored"
            and d["result"]["id"] != first["id"]
            and d["result"]
        ),
        timeout=120,
    )
    assert second["previous_result_id"] == first["id"]
    assert second["sr_sop_instance_uid"] != first["sr_sop_instance_uid"]
    report = dcmread(stored_path(node, second["sr_sop_instance_uid"]))
    predecessors = {
        item.ReferencedSOPInstanceUID
        for study in report.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert first["sr_sop_instance_uid"] in predecessors


def test_return_to_sender_and_warning_statuses_count_as_delivered(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    modality = PeerSCP("MODALITY", status=0xB007)  # stored, "data set does not match" warning
    stranger = PeerSCP("OTHER_MOD")
    try:
        node = node_factory(score=True, model_bundle=tiny_bundle)
        add_destination(
            node.db,
            "modality",
            ae_title="MODALITY",
            host="127.0.0.1",
            port=modality.port,
            send_all=False,
        )
        add_destination(
            node.db,
            "other",
            ae_title="OTHER_MOD",
            host="127.0.0.1",
            port=stranger.port,
            send_all=False,
        )
        exam = synth_exams[2]
        assert storescu(node.scp.port, exam.files, aet="MODALITY").returncode == 0

        def delivered() -> list[dict[str, Any]]:
            result = exam_detail(node.db, exam.study_uid).get("result")
            deliveries = result["deliveries"] if result else []
            return (
                deliveries
                if deliveries and all(d["state"] == "delivered" for d in deliveries)
                else []
            )

        deliveries = wait_for(delivered, timeout=120, interval=0.3)
        assert {d["destination"] for d in deliveries} == {"modality"}
        assert {d["last_status"] for d in deliveries} == {0xB007}
        assert len(modality.received) == 13 and stranger.received == []
    finally:
        modality.stop()
        stranger.stop()


def test_dead_letters_are_requeued_and_delivered(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    port = free_port()  # nothing listens yet
    node = node_factory(
        score=True,
        model_bundle=tiny_bundle,
        outbox_max_age_seconds=1.0,
        outbox_backoff_base=0.2,
        outbox_backoff_max=0.5,
    )
    add_destination(node.db, "pacs", ae_title="PACS", host="127.0.0.1", port=port)
    exam = synth_exams[0]
    assert storescu(node.scp.port, exam.files).returncode == 0

    def all_dead() -> bool:
        result = exam_detail(node.db, exam.study_uid).get("result")
        return bool(
            result
            and result["deliveries"]
            and all(d["state"] == "dead" for d in result["deliveries"])
        )

    wait_for(all_dead, timeout=120, interval=0.3)
    pacs = PeerSCP("PACS", port=port)
    try:
        assert retry(node.db, destination="pacs") == 13
        wait_for(lambda: len(pacs.received) == 13, timeout=60)

        def delivery_states() -> set[str]:
            result = exam_detail(node.db, exam.study_uid)["result"]
            return {d["state"] for d in result["deliveries"]}

        # the peer acknowledges before the exporter commits the outbox rows: wait for them
        wait_for(lambda: delivery_states() == {"delivered"}, timeout=30)
        assert len(pacs.received) == 13
    finally:
        pacs.stop()


@pytest.mark.postgres
def test_separate_workers_share_postgresql_and_score_each_exam_once(
    node_process: Any, pg_url: str, tiny_bundle: Path, synth_exams: list[Any], tmp_path: Path
) -> None:
    node = node_process(
        tmp_path / "data",
        db_url=pg_url,
        MAMMO_SERVE_WORKER="false",
        MAMMO_MODEL_BUNDLE=str(tiny_bundle),
    )
    node.start()
    workers = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mammo-node"),
                "worker",
                "--id",
                f"w{i}",
                "--data-dir",
                str(tmp_path / "data"),
                "--db-url",
                pg_url,
            ],
            env=node.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in (1, 2)
    ]
    try:
        for exam in synth_exams:
            assert storescu(node.port, exam.files).returncode == 0

        def all_scored() -> list[dict[str, Any]]:
            exams = json.loads(node.cli("exams", "list", "--json").stdout)
            return exams if len(exams) == 3 and all(e["state"] == "scored" for e in exams) else []

        wait_for(all_scored, timeout=180, interval=0.5)
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            per_exam = conn.execute(
                text("SELECT exam_fk, count(*) FROM results GROUP BY exam_fk")
            ).all()
            claimed_by = {r[0] for r in conn.execute(text("SELECT DISTINCT worker FROM results"))}
        engine.dispose()
        assert sorted(n for _, n in per_exam) == [1, 1, 1], "each exam scored exactly once"
        assert claimed_by <= {"w1", "w2"}
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=60)


def test_a_batch_scores_each_exam_on_its_own_and_one_bad_exam_fails_alone(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    node = node_factory(score=False, max_attempts=2, model_bundle=tiny_bundle, scoring_batch_size=3)
    for exam in synth_exams:
        assert storescu(node.scp.port, exam.files).returncode == 0
    for exam in synth_exams:
        wait_for(lambda exam=exam: state_of(node, exam.study_uid) == "ready", timeout=30)
    bad = synth_exams[2]
    path = stored_path(node, exam_detail(node.db, bad.study_uid)["slots"]["R-MLO"])
    path.write_bytes(path.read_bytes()[:2000])

    worker = Worker(node.settings, node.db, node.ingestor, lambda: load_scorer(node.settings))
    assert worker.batch_size == 3
    assert worker.warm_up() > 0  # the synthetic exam through the model and the writers
    assert worker.run_once()  # one batch: all three exams claimed together
    good = [exam_detail(node.db, e.study_uid) for e in synth_exams[:2]]
    assert [d["state"] for d in good] == ["scored", "scored"]
    assert all(d["result"]["sr_sop_instance_uid"] for d in good)
    assert len({d["result"]["id"] for d in good}) == 2, "a result of its own per exam"
    failed = exam_detail(node.db, bad.study_uid)
    assert failed["state"] == "ready" and failed["last_error"]  # its attempt 1 of 2
    assert worker.run_once()
    assert state_of(node, bad.study_uid) == "failed"
    assert [state_of(node, e.study_uid) for e in synth_exams[:2]] == ["scored", "scored"]
    assert not worker.run_once()


def test_the_sc_pixel_budget_is_a_site_setting(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any]
) -> None:
    """MAMMO_SC_MAX_PIXELS reaches the worker's Secondary Captures (PACS storage and the bytes
    sent per exam); the default is the writers' own."""
    from mammo_node.config import Settings
    from mammo_node.writers.sc import DEFAULT_MAX_PIXELS

    assert Settings().sc_max_pixels == DEFAULT_MAX_PIXELS
    exam = synth_exams[0]  # 256 x 208 per view
    node = node_factory(score=False, model_bundle=tiny_bundle, sc_max_pixels=128 * 104)
    assert storescu(node.scp.port, exam.files).returncode == 0
    wait_for(lambda: state_of(node, exam.study_uid) == "ready", timeout=30)
    worker = Worker(node.settings, node.db, node.ingestor, lambda: load_scorer(node.settings))
    assert worker.run_once()
    with node.db.read() as session:
        captures = session.scalars(
            select(Instance).where(Instance.output_kind == "sc", Instance.result_fk.is_not(None))
        ).all()
        assert len(captures) == 4
        for capture in captures:
            ds = dcmread(node.store.path(capture.rel_path), stop_before_pixels=True)
            assert (ds.Rows, ds.Columns) == (128, 104), "reduced 2x to fit the site's budget"
            assert "reduced 2x" in ds.DerivationDescription
