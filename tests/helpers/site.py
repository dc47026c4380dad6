"""A populated node behind a real HTTP server, for the web tests.

``build_site`` files real synthetic exams through the Ingestor (the one ingest path) and runs
the real pixel checks; for one exam it writes a result the way the worker does - a ``results``
row plus the real SR / SC / SEG objects built by ``mammo_node.writers`` from a hand-placed
inference (ROI and centre of attention on the synthetic lesion), filed as generated instances -
and outbox rows for two destinations (one delivered, one failing). A second exam is PARTIAL
with R-MLO missing. Nothing is mocked: the server is uvicorn on a free port.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from mammo_node.config import Settings
from mammo_node.db import repo
from mammo_node.db.models import Destination, Instance, OutboxItem, Result
from mammo_node.db.session import Database, upgrade
from mammo_node.domain import (
    ExamInference,
    ExamState,
    Origin,
    Slot,
)
from mammo_node.filing.ingest import Ingestor
from mammo_node.filing.storage import InstanceStore
from mammo_node.grouping.service import Grouper
from mammo_node.responses import ScoredExam
from mammo_node.synth import SynthExam, SynthOptions, generate_exam
from mammo_node.web.server import WebServer
from mammo_node.worker import file_outputs
from mammo_node.writers.outputs import build_outputs
from tests.helpers.writers import make_inference

ADMIN_TOKEN = "admin-secret-token-0123456789"
READ_TOKEN = "reader-secret-token-0123456789"
TOKENS = [f"alice:admin:{ADMIN_TOKEN}", f"rachel:read:{READ_TOKEN}"]
OPTIONS = SynthOptions(rows=256, columns=208, seed=11, exams=2)
SCORES = {"L-CC": -1.25, "L-MLO": -0.5, "R-CC": 2.75, "R-MLO": 1.5}


@dataclass
class Site:
    base: str
    settings: Settings
    db: Database
    ingestor: Ingestor
    server: WebServer
    scored: SynthExam
    partial: SynthExam
    result_id: int
    inference: ExamInference
    outputs: dict[str, list[str]] = field(default_factory=dict)  # kind -> SOP Instance UIDs

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def sop(self, exam: SynthExam, slot: str) -> str:
        return str(exam.datasets[Slot.parse(slot)].SOPInstanceUID)


def synth_exam(
    patient_id: str, outcome: str, laterality: str, day: dt.date, photometric: str = "MONOCHROME2"
) -> SynthExam:
    rng = np.random.default_rng(zlib.crc32(f"{patient_id}|{day.isoformat()}".encode()))
    return generate_exam(
        rng,
        options=OPTIONS,
        patient_id=patient_id,
        outcome=outcome,
        cancer_laterality=laterality,
        study_date=day,
        photometric=photometric,
        bits_stored=12,
    )


def file_dataset(
    ingestor: Ingestor,
    ds: Dataset,
    *,
    source: str = "dimse",
    origin: Origin = Origin.RECEIVED,
    calling_ae: str = "MODALITY",
) -> None:
    temp = ingestor.store.temp_path()
    ds.save_as(temp, enforce_file_format=True)
    ingestor.ingest_file(
        temp, source=source, calling_ae=calling_ae, peer_host="127.0.0.1", origin=origin
    )


def _inference(exam: SynthExam) -> ExamInference:
    """Scores by view as SCORES, the centre of attention on the synthetic lesion."""
    lesions = {Slot.parse(t.slot): (t.x + 0.5, t.y + 0.5) for t in exam.truth}
    scores = {Slot.parse(slot): score for slot, score in SCORES.items()}
    return make_inference(exam.datasets, scores=scores, centres=lesions)


def _store_result(
    site_db: Database, ingestor: Ingestor, exam: SynthExam
) -> tuple[int, ExamInference, dict[str, list[str]]]:
    """What the worker stores for a scored exam: result row, outputs, outbox rows."""
    inference = _inference(exam)
    with site_db.session() as session:
        row = repo.exam_by_uid(session, exam.study_uid)
        assert row is not None
        result = Result(
            exam_fk=row.id,
            exam_revision=row.revision,
            model_name=inference.bundle.name,
            model_version=inference.bundle.version,
            model_is_demo=True,
            score_kind="logit_difference",
            exam_score=inference.scores.exam_score,
            breast_scores={k.value: v for k, v in inference.scores.breast_scores.items()},
            images=ScoredExam.of(inference).to_json()["images"],
            verdicts=dict(inference.verdicts),
            created_at=row.last_received_at + dt.timedelta(seconds=12.5),
            device="cpu",
            worker="tests",
        )
        session.add(result)
        session.flush()
        result_id = result.id
    objects = build_outputs(exam.datasets, inference, revision=0)
    outputs: dict[str, list[str]] = {}
    for obj in objects:
        outputs.setdefault(obj.kind.value, []).append(obj.sop_instance_uid)
    file_outputs(ingestor, objects, calling_ae="")  # filed together, as the worker files them
    with site_db.session() as session:
        ids = {}
        for kind, uids in outputs.items():
            for uid in uids:
                instance = session.query(Instance).filter_by(sop_instance_uid=uid).one()
                instance.result_fk = result_id
                instance.output_kind = kind
                ids[uid] = instance.id
        result = session.get(Result, result_id)
        assert result is not None
        result.sr_sop_instance_uid = outputs["sr"][0]
        pacs = Destination(name="pacs", ae_title="PACS", host="10.0.0.5", port=104)
        station = Destination(
            name="reading-room",
            ae_title="WS1",
            host="10.0.0.9",
            port=104,
            config_error="association rejected: called AE title not recognised (reported once)",
        )
        session.add_all([pacs, station])
        session.flush()
        now = dt.datetime.now(dt.UTC)
        for uid, instance_id in ids.items():
            session.add(
                OutboxItem(
                    instance_fk=instance_id,
                    destination_fk=pacs.id,
                    state="delivered",
                    attempts=1,
                    delivered_at=now,
                    last_status=0,
                )
            )
            session.add(
                OutboxItem(
                    instance_fk=instance_id,
                    destination_fk=station.id,
                    state="dead",
                    attempts=5,
                    last_status=None,
                    last_error=f"{uid}: association rejected",
                )
            )
        exam_row = repo.exam_by_uid(session, exam.study_uid)
        assert exam_row is not None
        repo.set_exam_state(session, exam_row, ExamState.SCORED, "scored by mammo-demo 0.1.0")
    return result_id, inference, outputs


def build_site(data_dir: Path, db_url: str, **overrides: Any) -> Site:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "db_url": db_url,
        "host": "127.0.0.1",
        "http_port": 0,
        "api_tokens": TOKENS,
        "min_free_disk_mb": 0,
    }
    values.update(overrides)
    settings = Settings(**values)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    store = InstanceStore(settings.storage_dir)
    ingestor = Ingestor(settings, db, store)
    scored = synth_exam("WEB-0001", "screening", "R", dt.date(2026, 3, 4))
    partial = synth_exam("WEB-0002", "normal", "", dt.date(2026, 5, 20), "MONOCHROME1")
    for ds in scored.datasets.values():
        file_dataset(ingestor, ds)
    for slot, ds in partial.datasets.items():
        if str(slot) != "R-MLO":
            file_dataset(ingestor, ds)
    Grouper(settings, db, store).check_pending_pixels(limit=100)
    result_id, inference, outputs = _store_result(db, ingestor, scored)
    with db.session() as session:
        exam = repo.exam_by_uid(session, partial.study_uid)
        assert exam is not None
        exam.missing_views = ["R-MLO"]
        repo.set_exam_state(session, exam, ExamState.PARTIAL, "missing views: R-MLO")
    server = WebServer(settings, db, ingestor)
    server.start()
    return Site(
        f"http://127.0.0.1:{server.port}",
        settings,
        db,
        ingestor,
        server,
        scored,
        partial,
        result_id,
        inference,
        outputs,
    )


@contextmanager
def running_site(data_dir: Path, db_url: str, **overrides: Any) -> Iterator[Site]:
    site = build_site(data_dir, db_url, **overrides)
    try:
        yield site
    finally:
        site.server.stop()
        site.db.dispose()


@contextmanager
def extra_server(
    site: Site, settings: dict[str, Any] | None = None, **kwargs: Any
) -> Iterator[str]:
    """A second server over the same node with other settings (tokens, loopback...)."""
    server = WebServer(
        site.settings.model_copy(update=settings or {}), site.db, site.ingestor, **kwargs
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
