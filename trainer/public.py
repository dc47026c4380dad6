"""Readers of public mammography datasets: their layouts into a manifest (``index --format``).

Label mappings (the paper's labels: a screening-detected cancer makes its breast's images
positive; everything else is negative):

- ``rsna`` (RSNA Screening Mammography, Kaggle 2022): exam = ``patient_id`` (one screening
  exam each); slot from ``laterality``/``view`` of train.csv (other views are left out);
  ``cancer`` = 1 on an image -> screening cancer on that breast; else normal. No interval
  cancers, no lesion positions.
- ``vindr`` (VinDr-Mammo): exam = ``study_id`` (also the patient: the dataset has no patient
  ids); no outcomes are published, so breast BI-RADS 4 or 5 is the stated proxy for a
  screening-detected cancer on that breast (BI-RADS 1-3 -> negative); boxes of findings
  with BI-RADS 4-5 give the lesion truth (centre, radius = half the longer side).
- ``cmmd`` (Chinese Mammography Database): exam = ``ID1``; a ``Malignant`` classification
  for a side -> screening cancer on that breast; ``Benign`` -> negative; slots from the
  DICOM tags (the node's rules). Many patients have the affected breast only: exams keep
  each breast imaged in both views (``breasts="any"``; exam score = max over those).
- ``cbis-ddsm``: exam = ``patient_id``; ``pathology`` MALIGNANT on a side -> screening cancer
  on that breast; BENIGN / BENIGN_WITHOUT_CALLBACK -> negative; images are found by the
  first folder of ``image file path`` (the CSV's deeper path differs from TCIA's download);
  only breasts with an abnormality were scanned (``breasts="any"``).

Exams without exactly one image per kept slot are left out with a reason, as the paper does.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mammo_node.domain import SLOTS, Laterality, Slot, View
from trainer.data import ExamRecord, ImageRecord, LesionTruth, Manifest, scan_dicom
from trainer.errors import DataError

logger = logging.getLogger(__name__)

FORMATS = ("rsna", "vindr", "cmmd", "cbis-ddsm")


@dataclass(frozen=True)
class FoundImage:
    exam: str
    patient: str
    sop: str
    path: str  # relative to the data directory
    slot: Slot
    source: str  # where the slot came from


def _rows(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f'"{path}" does not exist; is this the dataset\'s top directory?')
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = sorted(set(required) - set(reader.fieldnames or ()))
        if missing:
            raise DataError(f'"{path}" lacks column(s) {missing}; it has {reader.fieldnames}.')
        return list(reader)


def _slot(laterality: str, view: str) -> Slot | None:
    lat = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(laterality.strip().upper())
    v = view.strip().upper()
    if lat is None or v not in {"CC", "MLO"}:
        return None
    return Slot(Laterality(lat), View(v))


def assemble(
    data_dir: Path,
    images: list[FoundImage],
    cancer_sides: dict[str, set[str]],
    *,
    truth: dict[str, LesionTruth] | None = None,
    breasts: str = "both",
) -> Manifest:
    """Group images into exams; keep exams with one image per slot of every kept breast."""
    by_exam: dict[str, list[FoundImage]] = defaultdict(list)
    for image in images:
        by_exam[image.exam].append(image)
    exams, excluded = [], []
    for key, found in sorted(by_exam.items()):
        per_slot: dict[Slot, list[FoundImage]] = defaultdict(list)
        for image in found:
            per_slot[image.slot].append(image)
        doubled = sorted(str(s) for s, v in per_slot.items() if len(v) > 1)
        if doubled:
            excluded.append(
                {
                    "study_uid": key,
                    "reason": "not_one_image_per_slot",
                    "detail": f"several images for {', '.join(doubled)}",
                }
            )
            continue
        kept_sides = {
            lat.value
            for lat in Laterality
            if Slot(lat, View.CC) in per_slot and Slot(lat, View.MLO) in per_slot
        }
        missing = [str(s) for s in SLOTS if s not in per_slot]
        sides = cancer_sides.get(key, set())
        if breasts == "both" and missing:
            excluded.append(
                {
                    "study_uid": key,
                    "reason": "not_one_image_per_slot",
                    "detail": f"missing {', '.join(missing)}",
                }
            )
            continue
        if not kept_sides:
            excluded.append(
                {
                    "study_uid": key,
                    "reason": "not_one_image_per_slot",
                    "detail": "no breast with both CC and MLO",
                }
            )
            continue
        if not sides <= kept_sides:
            excluded.append(
                {
                    "study_uid": key,
                    "reason": "cancer_breast_not_imaged",
                    "detail": "the breast with the cancer lacks CC or MLO",
                }
            )
            continue
        records = {
            slot: ImageRecord(v[0].sop, v[0].path, slot, "dicom", v[0].source, v[0].source)
            for slot, v in per_slot.items()
            if slot.laterality.value in kept_sides
        }
        laterality = "B" if len(sides) == 2 else next(iter(sides), "")
        exams.append(
            ExamRecord(
                key,
                found[0].patient,
                "screening" if sides else "normal",
                laterality,
                dict(sorted(records.items())),
            )
        )
    if not exams:
        raise DataError(f'No usable exam found in "{data_dir}" (left out: {len(excluded)}).')
    indexed = {i.sop_instance_uid for e in exams for i in e.images.values()}
    return Manifest(
        Path(data_dir).resolve(),
        exams,
        {k: v for k, v in (truth or {}).items() if k in indexed},
        excluded,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )


def read_rsna(data_dir: Path) -> Manifest:
    rows = _rows(data_dir / "train.csv", ("patient_id", "image_id", "laterality", "view", "cancer"))
    images, sides = [], defaultdict(set)
    for row in rows:
        slot = _slot(row["laterality"], row["view"])
        patient = row["patient_id"].strip()
        if slot is None:
            continue  # AT, LM, ML, LMO views: not one of the four slots
        path = Path("train_images") / patient / f"{row['image_id'].strip()}.dcm"
        if not (data_dir / path).is_file():
            raise DataError(
                f"train.csv lists image {row['image_id']}, whose file under train_images/ is "
                "missing."
            )
        images.append(
            FoundImage(
                patient, patient, f"rsna:{row['image_id'].strip()}", str(path), slot, "train.csv"
            )
        )
        if row["cancer"].strip() == "1":
            sides[patient].add(slot.laterality.value)
    return assemble(data_dir, images, dict(sides))


def read_vindr(data_dir: Path) -> Manifest:
    rows = _rows(
        data_dir / "breast-level_annotations.csv",
        ("study_id", "image_id", "laterality", "view_position", "breast_birads"),
    )
    images, sides = [], defaultdict(set)
    for row in rows:
        slot = _slot(row["laterality"], row["view_position"])
        if slot is None:
            continue
        study, image = row["study_id"].strip(), row["image_id"].strip()
        path = Path("images") / study / f"{image}.dicom"
        if not (data_dir / path).is_file():
            raise DataError(
                f"breast-level_annotations.csv lists image {image}, whose file under images/ "
                "is missing."
            )
        images.append(
            FoundImage(
                study, study, f"vindr:{image}", str(path), slot, "breast-level_annotations.csv"
            )
        )
        if _birads(row["breast_birads"]) >= 4:
            sides[study].add(slot.laterality.value)
    truth: dict[str, LesionTruth] = {}
    findings = data_dir / "finding_annotations.csv"
    if findings.is_file():
        for row in _rows(findings, ("image_id", "finding_birads", "xmin", "ymin", "xmax", "ymax")):
            if _birads(row["finding_birads"]) < 4 or not row["xmin"].strip():
                continue
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            lesion = LesionTruth((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2)
            sop = f"vindr:{row['image_id'].strip()}"
            if sop not in truth or lesion.radius > truth[sop].radius:
                truth[sop] = lesion
    return assemble(data_dir, images, dict(sides), truth=truth)


def _birads(text: str) -> int:
    digits = "".join(c for c in text if c.isdigit())
    return int(digits[0]) if digits else 0


def _clinical_rows(data_dir: Path) -> list[dict[str, str]]:
    csv_path = data_dir / "CMMD_clinicaldata_revision.csv"
    xlsx = data_dir / "CMMD_clinicaldata_revision.xlsx"
    required = ("ID1", "LeftRight", "classification")
    if csv_path.is_file() or not xlsx.is_file():
        return _rows(csv_path, required)
    try:
        import openpyxl
    except ImportError:
        raise DataError(
            f'"{xlsx}" needs openpyxl (pip install openpyxl), or save the sheet as '
            f'"{csv_path.name}" beside it.'
        ) from None
    sheet = openpyxl.load_workbook(xlsx, read_only=True).active
    values = list(sheet.iter_rows(values_only=True))
    header = [str(v) for v in values[0]]
    rows = [
        {h: "" if v is None else str(v) for h, v in zip(header, r, strict=False)}
        for r in values[1:]
    ]
    missing = sorted(set(required) - set(header))
    if missing:
        raise DataError(f'"{xlsx}" lacks column(s) {missing}.')
    return rows


def read_cmmd(data_dir: Path) -> Manifest:
    sides: dict[str, set[str]] = defaultdict(set)
    for row in _clinical_rows(data_dir):
        if row["classification"].strip().lower() == "malignant":
            side = _slot(row["LeftRight"], "CC")
            if side is not None:
                sides[row["ID1"].strip()].add(side.laterality.value)
    images = []
    for found in scan_dicom(data_dir):
        if found.record is None:
            continue
        patient = Path(found.record.path).parts[0]
        images.append(
            FoundImage(
                patient,
                patient,
                found.record.sop_instance_uid,
                found.record.path,
                found.record.slot,
                found.record.laterality_source,
            )
        )
    return assemble(data_dir, images, dict(sides), breasts="any")


def read_cbis_ddsm(data_dir: Path) -> Manifest:
    tables = sorted(data_dir.glob("*_case_description_*.csv"))
    if not tables:
        raise DataError(f'No "*_case_description_*.csv" in "{data_dir}".')
    images: dict[tuple[str, Slot], FoundImage] = {}
    sides: dict[str, set[str]] = defaultdict(set)
    for table in tables:
        for row in _rows(
            table,
            ("patient_id", "left or right breast", "image view", "pathology", "image file path"),
        ):
            slot = _slot(row["left or right breast"], row["image view"])
            if slot is None:
                continue
            patient = row["patient_id"].strip()
            folder = row["image file path"].strip().split("/")[0]
            if row["pathology"].strip().upper() == "MALIGNANT":
                sides[patient].add(slot.laterality.value)
            if (patient, slot) in images:
                continue  # the same mammogram listed for another abnormality
            files = sorted(p for p in (data_dir / folder).rglob("*.dcm"))
            if not files:
                raise DataError(f"{table.name}: a listed image folder holds no DICOM file.")
            images[(patient, slot)] = FoundImage(
                patient,
                patient,
                f"cbis:{folder}",
                str(files[0].relative_to(data_dir)),
                slot,
                table.name,
            )
    return assemble(data_dir, list(images.values()), dict(sides), breasts="any")


READERS = {"rsna": read_rsna, "vindr": read_vindr, "cmmd": read_cmmd, "cbis-ddsm": read_cbis_ddsm}


def index_public(data_dir: Path, fmt: str) -> Manifest:
    if fmt not in READERS:
        raise DataError(f'Argument "format" should be one of {FORMATS}, got {fmt!r}.')
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise DataError(f'Data directory "{data_dir}" does not exist.')
    return READERS[fmt](data_dir)
