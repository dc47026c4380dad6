"""Index rows of a large synthetic archive, inserted in bulk (benchmarks and query-plan tests).

``insert_index_rows`` writes what the Ingestor would have written for ``count`` scored 4-view
MG exams - a patient, an exam, four series, four instances and a result each - straight into
the tables in batches, without files: a database of 100 000 exams in a few minutes. The values
follow ``bulk_exam`` (exam ``n`` always has the same patient, date, accession and UIDs), so a
benchmark or a test knows what to ask for. The instance rows point at files that do not exist:
only QIDO, the worklist and the exam page may read them (they read no files); WADO-RS needs
real files filed through the Ingestor.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from mammo_node.db.models import Exam, Instance, Patient, Result, Series, fold_name
from mammo_node.db.session import Database
from mammo_node.domain import SLOTS, ExamState, Origin, PixelCheck
from mammo_node.synth.dataset import PATIENT_ORIENTATION
from mammo_node.synth.identifiers import make_uid

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
FIRST_DATE = dt.date(2023, 1, 1)
DAYS = 730  # study dates spread over two years


@dataclass(frozen=True)
class BulkExam:
    """What exam ``n`` of a bulk archive holds."""

    number: int
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    study_uid: str

    def series_uid(self, slot: object) -> str:
        return make_uid("bulk-series", self.number, slot)

    def sop_uid(self, slot: object) -> str:
        return make_uid("bulk-sop", self.number, slot)


def bulk_exam(n: int, *, prefix: str = "BULK") -> BulkExam:
    if n < 0:
        raise ValueError(f'Argument "n" should be >= 0, got {n}.')
    return BulkExam(
        number=n,
        patient_id=f"{prefix}{n:07d}",
        patient_name=f"{prefix}^PATIENT{n:07d}",
        study_date=(FIRST_DATE + dt.timedelta(days=n % DAYS)).strftime("%Y%m%d"),
        accession_number=f"A{n:09d}",
        study_uid=make_uid("bulk-study", prefix, n),
    )


def _next_ids(session: Session) -> dict[str, int]:
    tables = {"patients": Patient, "exams": Exam, "series": Series, "instances": Instance}
    tables["results"] = Result
    return {
        name: int(session.scalar(select(func.coalesce(func.max(model.id), 0))) or 0) + 1
        for name, model in tables.items()
    }


def _rows(
    first: int, count: int, ids: dict[str, int], prefix: str, seed: int
) -> Iterator[
    tuple[
        dict[str, Any], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]
    ]
]:
    rng = random.Random(seed)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for k in range(count):
        exam = bulk_exam(first + k, prefix=prefix)
        patient_id, exam_id = ids["patients"] + k, ids["exams"] + k
        received = base + dt.timedelta(minutes=exam.number)
        patient = {
            "id": patient_id,
            "patient_key": f"\\{exam.patient_id}",
            "patient_id": exam.patient_id,
            "issuer": "",
            "name": exam.patient_name,
            "birth_date": "19700101",
            "sex": "F",
        }
        exam_row = {
            "id": exam_id,
            "study_uid": exam.study_uid,
            "patient_fk": patient_id,
            "accession_number": exam.accession_number,
            "study_date": exam.study_date,
            "study_time": "093000",
            "study_description": "SCREENING MAMMOGRAPHY",
            "state": ExamState.SCORED.value,
            "state_reason": "scored",
            "missing_views": [],
            "revision": 0,
            "first_received_at": received,
            "last_received_at": received,
            "state_changed_at": received,
            "source_ae": "BULK",
            "patient_name": exam.patient_name,
            "patient_name_folded": fold_name(exam.patient_name),
            "patient_birth_date": "19700101",
            "patient_sex": "F",
            "patient_age": "055Y",
            "study_id": str(exam.number),
            "referring_physician_name": "REFERRER^ANNA",
            "timezone_offset": "+0000",
        }
        series_rows, instance_rows = [], []
        for index, slot in enumerate(SLOTS):
            series_id = ids["series"] + 4 * k + index
            series_uid, sop_uid = exam.series_uid(slot), exam.sop_uid(slot)
            series_rows.append(
                {
                    "id": series_id,
                    "series_uid": series_uid,
                    "exam_fk": exam_id,
                    "modality": "MG",
                    "series_number": index + 1,
                    "series_description": str(slot),
                    "pps_start_date": exam.study_date,
                    "pps_start_time": "093000",
                }
            )
            instance_rows.append(
                {
                    "id": ids["instances"] + 4 * k + index,
                    "sop_instance_uid": sop_uid,
                    "sop_class_uid": MG_FOR_PRESENTATION,
                    "series_fk": series_id,
                    "exam_fk": exam_id,
                    "transfer_syntax_uid": EXPLICIT_VR_LE,
                    "rel_path": f"{exam.study_uid}/{series_uid}/{sop_uid}.bulk.dcm",
                    "size_bytes": 28_000,
                    "sha256": "0" * 64,
                    "received_at": received,
                    "origin": Origin.RECEIVED.value,
                    "source": "dimse",
                    "calling_ae": "BULK",
                    "modality": "MG",
                    "instance_number": 1,
                    "rows": 128,
                    "columns": 104,
                    "bits_allocated": 16,
                    "number_of_frames": None,
                    "patient_orientation": "\\".join(PATIENT_ORIENTATION[slot]),
                    "photometric": "MONOCHROME2",
                    "presentation_intent": "FOR PRESENTATION",
                    "laterality": slot.laterality.value,
                    "laterality_source": "ImageLaterality",
                    "view": slot.view.value,
                    "view_source": "ViewCodeSequence",
                    "slot": str(slot),
                    "kind": "image",
                    "facts": {},
                    "pixel_check": PixelCheck.OK.value,
                }
            )
        score = rng.gauss(-3.0, 2.0)
        result = {
            "id": ids["results"] + k,
            "exam_fk": exam_id,
            "exam_revision": 0,
            "created_at": received + dt.timedelta(seconds=30),
            "model_name": "mammo-node-bulk",
            "model_version": "0.0.0",
            "model_is_demo": True,
            "exam_score": score,
            "breast_scores": {"L": score, "R": score - 1.0},
            "images": {},
            "verdicts": {},
            "timings": {"total": 1.0},
            "selection": {"slots": {str(s): exam.sop_uid(s) for s in SLOTS}},
            # deciles of the screening population's scores, as a calibration makes them
            "category": min(10, 1 + int(10 * NormalDist(-3.0, 2.0).cdf(score))),
        }
        exam_row["latest_exam_score"] = result["exam_score"]
        exam_row["latest_category"] = result["category"]
        yield patient, exam_row, series_rows, instance_rows, result


def insert_index_rows(
    db: Database, *, first: int, count: int, prefix: str = "BULK", batch: int = 5000
) -> None:
    """Insert the rows of bulk exams ``first`` .. ``first + count - 1`` (see the module)."""
    if count < 0 or first < 0:
        raise ValueError(f'Arguments "first" and "count" should be >= 0, got {first}, {count}.')
    with db.session() as session:
        ids = _next_ids(session)
    buffers: dict[Any, list[dict[str, Any]]] = {Patient: [], Exam: [], Series: [], Instance: []}
    buffers[Result] = []

    def flush() -> None:
        with db.session() as session:
            for model, rows in buffers.items():  # parents first (foreign keys)
                if rows:
                    session.execute(insert(model), rows)
                    rows.clear()

    for patient, exam, series, instances, result in _rows(first, count, ids, prefix, first):
        buffers[Patient].append(patient)
        buffers[Exam].append(exam)
        buffers[Series].extend(series)
        buffers[Instance].extend(instances)
        buffers[Result].append(result)
        if len(buffers[Exam]) >= batch:
            flush()
    flush()
    if db.dialect == "postgresql":  # explicit ids: move the sequences past them
        with db.session() as session:
            for table in ("patients", "exams", "series", "instances", "results"):
                session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
