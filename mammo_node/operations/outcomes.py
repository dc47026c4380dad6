"""Screening outcomes and the loop back to training.

Outcomes arrive months after the exam (an interval cancer is found between two screening
rounds): ``mammo-node outcomes import CSV`` links each row to its exam by StudyInstanceUID
or, failing that, by accession number; the monitor then shows sensitivity and PPV per model
version. ``mammo-node export-training DIR`` writes the exams that have an outcome as a
dataset the trainer reads - the four scored images of each exam, ``labels.csv`` in the
format ``mammo-train index`` takes, and a ``manifest.json`` in the trainer's manifest format -
so that the site's next model trains on the node's own traffic (the paper's premise: a site
trains on its own image labels).

The CSV: ``study_uid`` or ``accession_number`` (``accession``), ``outcome``
(screening | interval | normal), ``cancer_laterality`` (``laterality``; L | R | B, required
for a screening cancer), optional ``reader1_L, reader1_R, reader2_L, reader2_R``. A file with
any invalid row is refused as a whole, with every bad line named; rows for exams this node
does not hold are reported and skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mammo_node.db import repo
from mammo_node.db.models import Exam, Instance, Outcome, Patient, utcnow
from mammo_node.db.session import Database
from mammo_node.errors import MammoNodeError
from mammo_node.observe import audit

OUTCOMES = ("screening", "interval", "normal")
LATERALITIES = ("L", "R", "B", "")
READER_COLUMNS = ("reader1_L", "reader1_R", "reader2_L", "reader2_R")
TRAIN_MANIFEST_FORMAT = "mammo-train-manifest/1"  # what trainer.data.Manifest.load reads
_ALIASES = {"accession": "accession_number", "laterality": "cancer_laterality"}


class OutcomesError(MammoNodeError):
    """An outcomes file is invalid, or a training export cannot be written."""


@dataclass(frozen=True)
class OutcomeRow:
    line: int
    study_uid: str
    accession_number: str
    outcome: str
    cancer_laterality: str
    readers: dict[str, float]


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    updated: int = 0
    not_on_this_node: list[str] = field(default_factory=list)  # "line N: study/accession"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- reading the CSV -----------------------------------------------------------------------
def read_outcomes(path: Path) -> list[OutcomeRow]:
    """Parse and validate every row; raise OutcomesError naming all bad lines."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [_ALIASES.get(f.strip(), f.strip()) for f in reader.fieldnames or []]
            raw_rows = [
                (
                    number,
                    {
                        _ALIASES.get(k.strip(), k.strip()): (v or "").strip()
                        for k, v in row.items()
                        if k
                    },
                )
                for number, row in enumerate(reader, start=2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OutcomesError(f"cannot read outcomes file {path}: {exc}") from exc
    if "outcome" not in fields or not {"study_uid", "accession_number"} & set(fields):
        raise OutcomesError(
            f"{path}: columns {fields}; expected outcome, cancer_laterality and study_uid or "
            "accession_number"
        )
    rows, errors = [], []
    for number, row in raw_rows:
        outcome = row.get("outcome", "").lower()
        side = row.get("cancer_laterality", "").upper()
        study, accession = row.get("study_uid", ""), row.get("accession_number", "")
        problems = []
        if not study and not accession:
            problems.append("no study_uid or accession_number")
        if outcome not in OUTCOMES:
            problems.append(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        if side not in LATERALITIES:
            problems.append(f"cancer_laterality {side!r} is not L, R, B or empty")
        if outcome == "screening" and not side:
            problems.append("a screening cancer needs cancer_laterality (L, R or B)")
        if outcome == "normal" and side:
            problems.append("a normal exam has no cancer_laterality")
        readers = {}
        for column in READER_COLUMNS:
            if row.get(column):
                try:
                    readers[column] = float(row[column])
                except ValueError:
                    problems.append(f"{column} {row[column]!r} is not a number")
        if problems:
            errors.append(f"line {number}: {'; '.join(problems)}")
            continue
        rows.append(OutcomeRow(number, study, accession, outcome, side, readers))
    if errors:
        shown = "\n  ".join(errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise OutcomesError(
            f"{path}: {len(errors)} invalid row(s), nothing imported:\n  {shown}{more}"
        )
    return rows


# --- importing ------------------------------------------------------------------------------
def import_outcomes(db: Database, path: Path, *, actor: str = "cli") -> ImportReport:
    rows = read_outcomes(path)
    report = ImportReport(rows=len(rows))
    with db.session() as session:
        for row in rows:
            exam = _find_exam(session, row)
            if exam is None:
                # an accession number identifies a patient's visit: the line number says which
                report.not_on_this_node.append(
                    f"line {row.line}: {row.study_uid or 'by accession number'}"
                )
                continue
            found = session.scalars(select(Outcome).where(Outcome.exam_fk == exam.id)).first()
            if found is None:
                found = Outcome(exam_fk=exam.id)
                session.add(found)
                report.imported += 1
            else:
                report.updated += 1
            found.outcome = row.outcome
            found.cancer_laterality = row.cancer_laterality
            found.readers = row.readers
            found.source = path.name[:255]
            found.imported_at = utcnow()
        audit.record_in(
            session,
            actor,
            audit.OUTCOMES_IMPORTED,
            path.name[:128],
            rows=report.rows,
            imported=report.imported,
            updated=report.updated,
            not_on_this_node=len(report.not_on_this_node),
        )
    return report


def _find_exam(session: Any, row: OutcomeRow) -> Exam | None:
    if row.study_uid:
        exam = repo.exam_by_uid(session, row.study_uid)
        if exam is not None:
            return exam
    if row.accession_number:
        found = session.scalars(
            select(Exam).where(Exam.accession_number == row.accession_number).limit(2)
        ).all()
        if len(found) > 1:
            raise OutcomesError(
                f"line {row.line}: accession number matches several exams; give study_uid"
            )
        return found[0] if found else None
    return None


# --- the loop back to training -------------------------------------------------------------
@dataclass
class TrainingExport:
    directory: str
    exams: int
    images: int
    outcomes: dict[str, int]
    excluded: list[dict[str, str]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pseudonym(patient_key: str) -> str:
    """A stable patient code for fold grouping that does not carry the PatientID."""
    return "P" + hashlib.sha256(patient_key.encode("utf-8")).hexdigest()[:16]


def export_training(db: Database, store_root: Path, directory: Path) -> TrainingExport:
    """Write the exams with outcomes as a trainer dataset in ``directory``."""
    directory = directory.resolve()
    images_dir = directory / "images"
    if images_dir.exists() and any(images_dir.iterdir()):
        raise OutcomesError(f"{images_dir} is not empty: export into a new folder")
    images_dir.mkdir(parents=True, exist_ok=True)
    exams_json: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    count_images = 0
    with db.read() as session:
        rows = session.execute(
            select(Exam, Outcome, Patient.patient_key)
            .join(Outcome, Outcome.exam_fk == Exam.id)
            .join(Patient, Exam.patient_fk == Patient.id)
            .order_by(Exam.study_uid)
        ).all()
        for exam, outcome, patient_key in rows:
            resolution = repo.resolve_exam(session, exam)
            if resolution.missing:
                missing = ", ".join(map(str, resolution.missing))
                excluded.append(
                    {
                        "study_uid": exam.study_uid,
                        "reason": "not_one_image_per_slot",
                        "detail": f"missing {missing}",
                    }
                )
                continue
            uids = [uid for uid in resolution.slots.values() if uid]
            by_uid = {
                i.sop_instance_uid: i
                for i in session.scalars(
                    select(Instance).where(Instance.sop_instance_uid.in_(uids))
                )
            }
            if any(by_uid[u].pruned_at is not None for u in uids):
                excluded.append(
                    {
                        "study_uid": exam.study_uid,
                        "reason": "pruned",
                        "detail": "images deleted by retention",
                    }
                )
                continue
            images = {}
            for slot, uid in sorted(resolution.slots.items()):
                assert uid is not None
                row = by_uid[uid]
                relative = f"{exam.study_uid}/{slot}.dcm"
                _link_or_copy(store_root / row.rel_path, images_dir / relative)
                images[str(slot)] = {
                    "sop_instance_uid": uid,
                    "path": relative,
                    "source": "dicom",
                    "laterality_source": row.laterality_source,
                    "view_source": row.view_source,
                }
                count_images += 1
            patient = pseudonym(patient_key)
            exams_json.append(
                {
                    "study_uid": exam.study_uid,
                    "patient_id": patient,
                    "outcome": outcome.outcome,
                    "cancer_laterality": outcome.cancer_laterality,
                    "readers": outcome.readers,
                    "images": images,
                }
            )
            labels.append(
                {
                    "patient_id": patient,
                    "study_uid": exam.study_uid,
                    "outcome": outcome.outcome,
                    "cancer_laterality": outcome.cancer_laterality,
                    **{c: outcome.readers.get(c, "") for c in READER_COLUMNS},
                }
            )
        outcome_counts = dict(
            session.execute(select(Outcome.outcome, func.count()).group_by(Outcome.outcome)).all()
        )
    if not exams_json:
        raise OutcomesError("no exam with an outcome and its four images on this node")
    _write_labels(directory / "labels.csv", labels)
    counts = {o: sum(1 for e in exams_json if e["outcome"] == o) for o in OUTCOMES}
    manifest = {
        "format": TRAIN_MANIFEST_FORMAT,
        "data_dir": str(images_dir),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "counts": {
            "exams": len(exams_json),
            "images": count_images,
            "patients": len({e["patient_id"] for e in exams_json}),
            "outcomes": counts,
            "excluded_exams": len(excluded),
        },
        "exams": exams_json,
        "truth": {},
        "excluded": excluded,
    }
    temp = directory / ".manifest.json.tmp"
    temp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(temp, directory / "manifest.json")
    return TrainingExport(
        str(directory),
        len(exams_json),
        count_images,
        {k: int(v) for k, v in outcome_counts.items()},
        excluded,
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link on the store's filesystem (no second copy of the images), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_labels(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["patient_id", "study_uid", "outcome", "cancer_laterality"]
    if any(row[c] != "" for row in rows for c in READER_COLUMNS):
        columns += list(READER_COLUMNS)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
