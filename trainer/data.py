"""The dataset manifest: which exams, which image fills each slot, labels, reader scores, truth.

``index_dataset`` scans a directory of DICOM files (or PNG files described by a view CSV),
reads each image's slot with the node's own tag rules (``mammo_node.grouping.rules.classify`` /
``resolve``: laterality and view tags in the order ARCHITECTURE.md gives), joins labels.csv,
and leaves out - with counts and reasons - every exam without exactly one image per slot.

labels.csv: patient_id, study_uid, outcome (screening | interval | normal), cancer_laterality
(L | R | B | empty), optional reader1_L, reader1_R, reader2_L, reader2_R.
truth.csv (optional): sop_instance_uid, x, y, radius (lesion centre and radius in stored pixels,
pixel centres at integers as ``mammo-node synth`` writes them); only the localisation figure
uses it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from mammo_node.domain import Slot
from mammo_node.grouping.rules import ImageFacts, classify, resolve
from trainer.errors import DataError

logger = logging.getLogger(__name__)

FORMAT = "mammo-train-manifest/1"
OUTCOMES = ("screening", "interval", "normal")
READER_COLUMNS = ("reader1_L", "reader1_R", "reader2_L", "reader2_R")
SKIP_SUFFIXES = {".csv", ".json", ".txt", ".md"}


@dataclass(frozen=True)
class ImageRecord:
    sop_instance_uid: str
    path: str  # relative to the manifest's data_dir
    slot: Slot
    source: str  # "dicom" or "png"
    laterality_source: str = ""
    view_source: str = ""


@dataclass
class ExamRecord:
    study_uid: str
    patient_id: str
    outcome: str
    cancer_laterality: str  # L, R, B or ""
    images: dict[Slot, ImageRecord]
    readers: dict[str, float] = field(default_factory=dict)

    @property
    def exam_class(self) -> int:
        """0 normal, 1 screening cancer, 2 interval cancer (the fold strata)."""
        return {"normal": 0, "screening": 1, "interval": 2}[self.outcome]


@dataclass(frozen=True)
class LesionTruth:
    x: float  # continuous stored-pixel coordinates (pixel centres at +0.5)
    y: float
    radius: float


def image_label(exam: ExamRecord, slot: Slot) -> int:
    """The paper's label rule: a screening cancer makes the affected breast's two images
    positive; interval cancers, the other breast and normals are negative."""
    if exam.outcome != "screening":
        return 0
    return int(exam.cancer_laterality in (slot.laterality.value, "B"))


@dataclass
class Manifest:
    data_dir: Path
    exams: list[ExamRecord]
    truth: dict[str, LesionTruth] = field(default_factory=dict)
    excluded: list[dict[str, str]] = field(default_factory=list)
    created: str = ""

    @property
    def counts(self) -> dict[str, Any]:
        outcomes = Counter(e.outcome for e in self.exams)
        reasons = Counter(x["reason"] for x in self.excluded)
        return {
            "exams": len(self.exams),
            "images": sum(len(e.images) for e in self.exams),
            "patients": len({e.patient_id for e in self.exams}),
            "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES},
            "positive_images": sum(image_label(e, s) for e in self.exams for s in e.images),
            "excluded_exams": len(self.excluded),
            "excluded_by_reason": dict(sorted(reasons.items())),
            "truth_images": len(self.truth),
        }

    @property
    def has_readers(self) -> dict[str, bool]:
        one = all({"reader1_L", "reader1_R"} <= set(e.readers) for e in self.exams)
        two = one and all(set(READER_COLUMNS) <= set(e.readers) for e in self.exams)
        return {"one": bool(self.exams) and one, "two": bool(self.exams) and two}

    def exam(self, study_uid: str) -> ExamRecord:
        for exam in self.exams:
            if exam.study_uid == study_uid:
                return exam
        raise DataError(f"Study {study_uid} is not in the manifest.")

    def image_path(self, image: ImageRecord) -> Path:
        return self.data_dir / image.path

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "data_dir": str(self.data_dir),
            "created": self.created,
            "counts": self.counts,
            "exams": [
                {
                    "study_uid": e.study_uid,
                    "patient_id": e.patient_id,
                    "outcome": e.outcome,
                    "cancer_laterality": e.cancer_laterality,
                    "readers": e.readers,
                    "images": {
                        str(slot): {
                            "sop_instance_uid": i.sop_instance_uid,
                            "path": i.path,
                            "source": i.source,
                            "laterality_source": i.laterality_source,
                            "view_source": i.view_source,
                        }
                        for slot, i in sorted(e.images.items())
                    },
                }
                for e in self.exams
            ],
            "truth": {k: [t.x, t.y, t.radius] for k, t in self.truth.items()},
            "excluded": self.excluded,
        }

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f'Manifest "{path}" cannot be read: {exc}') from exc
        if data.get("format") != FORMAT:
            raise DataError(f'Manifest "{path}" has format {data.get("format")!r}, not {FORMAT!r}.')
        exams = []
        for e in data["exams"]:
            images = {
                Slot.parse(s): ImageRecord(slot=Slot.parse(s), **i) for s, i in e["images"].items()
            }
            exams.append(
                ExamRecord(
                    study_uid=e["study_uid"],
                    patient_id=e["patient_id"],
                    outcome=e["outcome"],
                    cancer_laterality=e["cancer_laterality"],
                    images=images,
                    readers={k: float(v) for k, v in e.get("readers", {}).items()},
                )
            )
        truth = {k: LesionTruth(*map(float, v)) for k, v in data.get("truth", {}).items()}
        return cls(
            data_dir=Path(data["data_dir"]),
            exams=exams,
            truth=truth,
            excluded=list(data.get("excluded", [])),
            created=data.get("created", ""),
        )


# --- labels and truth -------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    patient_id: str
    outcome: str
    cancer_laterality: str
    readers: dict[str, float]


def read_labels(path: Path) -> dict[str, Label]:
    """study_uid -> Label, validated row by row with the row number in every message."""
    rows = _read_csv(path, required=("patient_id", "study_uid", "outcome", "cancer_laterality"))
    labels: dict[str, Label] = {}
    for n, row in rows:
        study = row["study_uid"].strip()
        outcome = row["outcome"].strip().lower()
        side = row["cancer_laterality"].strip().upper()
        if outcome not in OUTCOMES:
            raise DataError(f"{path}:{n}: outcome should be one of {OUTCOMES}, got {outcome!r}.")
        if side not in ("L", "R", "B", ""):
            raise DataError(
                f"{path}:{n}: cancer_laterality should be L, R, B or empty, got {side!r}."
            )
        if study in labels:
            raise DataError(f"{path}:{n}: study {study} is listed twice.")
        readers = {}
        for column in READER_COLUMNS:
            text = (row.get(column) or "").strip()
            if text:
                try:
                    readers[column] = float(text)
                except ValueError:
                    raise DataError(
                        f"{path}:{n}: {column} should be a number, got {text!r}."
                    ) from None
        labels[study] = Label(row["patient_id"].strip(), outcome, side, readers)
    return labels


def read_truth(path: Path) -> dict[str, LesionTruth]:
    """sop_instance_uid -> lesion (the largest when an image has several)."""
    out: dict[str, LesionTruth] = {}
    for n, row in _read_csv(path, required=("sop_instance_uid", "x", "y", "radius")):
        try:
            lesion = LesionTruth(float(row["x"]) + 0.5, float(row["y"]) + 0.5, float(row["radius"]))
        except ValueError:
            raise DataError(f"{path}:{n}: x, y and radius should be numbers.") from None
        if row.get("kind", "malignant") == "benign_nodule":
            continue  # only cancers count for localisation
        sop = row["sop_instance_uid"].strip()
        if sop not in out or lesion.radius > out[sop].radius:
            out[sop] = lesion
    return out


def _read_csv(path: Path, *, required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = sorted(set(required) - set(reader.fieldnames or ()))
            if missing:
                raise DataError(f'"{path}" lacks column(s) {missing}; it has {reader.fieldnames}.')
            return [(n, row) for n, row in enumerate(reader, start=2)]
    except OSError as exc:
        raise DataError(f'"{path}" cannot be read: {exc}') from exc


# --- scanning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    study_uid: str
    facts: ImageFacts
    record: ImageRecord | None
    patient_id: str = ""  # the file's PatientID (public layouts key exams by it)


def scan_dicom(data_dir: Path, progress: Callable[[int, int], None] | None = None) -> list[_Found]:
    files = sorted(
        p
        for p in data_dir.rglob("*")
        if p.is_file() and p.suffix.lower() not in SKIP_SUFFIXES and not p.name.startswith(".")
    )
    found: list[_Found] = []
    skipped = 0
    for n, path in enumerate(files, start=1):
        try:
            ds = pydicom.dcmread(path, defer_size=4096)  # pixels stay on disk
        except (InvalidDicomError, OSError, ValueError):
            skipped += 1
            continue
        info = classify(ds)
        sop = str(ds.get("SOPInstanceUID", ""))
        record = None
        if info.slot is not None:
            record = ImageRecord(
                sop,
                str(path.relative_to(data_dir)),
                info.slot,
                "dicom",
                info.laterality_source,
                info.view_source,
            )
        facts = ImageFacts(sop, info.slot, info.for_processing, info.rule, info.rule_detail, "ok")
        study = str(ds.get("StudyInstanceUID", ""))
        found.append(_Found(study, facts, record, str(ds.get("PatientID", "")).strip()))
        if progress:
            progress(n, len(files))
    if skipped:
        logger.info("Skipped %d files that are not DICOM.", skipped)
    return found


def scan_png(data_dir: Path, views_csv: Path) -> list[_Found]:
    """PNG (or any Pillow greyscale image) files described by a view CSV:
    file, study_uid, laterality, view[, sop_instance_uid]."""
    found = []
    for n, row in _read_csv(views_csv, required=("file", "study_uid", "laterality", "view")):
        path = data_dir / row["file"].strip()
        if not path.is_file():
            raise DataError(f'{views_csv}:{n}: file "{path}" does not exist.')
        try:
            slot = Slot.parse(f"{row['laterality']}-{row['view']}")
        except ValueError as exc:
            raise DataError(f"{views_csv}:{n}: {exc}") from None
        sop = (row.get("sop_instance_uid") or "").strip() or row["file"].strip()
        record = ImageRecord(sop, row["file"].strip(), slot, "png", "views.csv", "views.csv")
        found.append(
            _Found(row["study_uid"].strip(), ImageFacts(sop, slot, False, None, "", "ok"), record)
        )
    return found


def index_dataset(
    data_dir: Path,
    *,
    labels_csv: Path,
    truth_csv: Path | None = None,
    views_csv: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Scan, join labels, keep exams with exactly one image per slot; say why others left."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise DataError(f'Data directory "{data_dir}" does not exist.')
    labels = read_labels(labels_csv)
    found = scan_png(data_dir, views_csv) if views_csv else scan_dicom(data_dir, progress)
    by_study: dict[str, list[_Found]] = {}
    for f in found:
        by_study.setdefault(f.study_uid, []).append(f)
    exams: list[ExamRecord] = []
    excluded: list[dict[str, str]] = []
    for study, items in sorted(by_study.items()):
        label = labels.get(study)
        if label is None:
            excluded.append({"study_uid": study, "reason": "no_label", "detail": "not in labels"})
            continue
        if label.outcome == "screening" and not label.cancer_laterality:
            excluded.append(
                {
                    "study_uid": study,
                    "reason": "screening_without_laterality",
                    "detail": "the label rule needs the affected breast",
                }
            )
            continue
        resolution = resolve(f.facts for f in items)
        missing = resolution.missing
        if missing:
            kept_out = sorted({n.reason.value for n in resolution.not_scored})
            excluded.append(
                {
                    "study_uid": study,
                    "reason": "not_one_image_per_slot",
                    "detail": f"missing {', '.join(map(str, missing))}; kept out: {kept_out}",
                }
            )
            continue
        records = {f.facts.sop_instance_uid: f.record for f in items}
        images = {slot: records[uid] for slot, uid in resolution.slots.items() if uid}
        exams.append(
            ExamRecord(
                study,
                label.patient_id,
                label.outcome,
                label.cancer_laterality,
                images,
                label.readers,
            )
        )  # type: ignore[arg-type]
    unseen = sorted(set(labels) - set(by_study))
    excluded += [
        {"study_uid": s, "reason": "no_images", "detail": "labelled, no images"} for s in unseen
    ]
    truth = read_truth(truth_csv) if truth_csv else {}
    indexed = {i.sop_instance_uid for e in exams for i in e.images.values()}
    manifest = Manifest(
        data_dir,
        exams,
        {k: v for k, v in truth.items() if k in indexed},
        excluded,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if not exams:
        raise DataError(
            f'No complete labelled exam found in "{data_dir}" (excluded: '
            f"{manifest.counts['excluded_by_reason']})."
        )
    return manifest
