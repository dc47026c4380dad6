"""Synthetic exams written in the layouts of public mammography datasets (test fixtures).

The trainer's readers (``mammo-train index --format ...``) are tested on these: the same
files, folders and CSV columns as the published datasets, filled with ``mammo_node.synth``
exams, so each reader is checked against known exams, slots and labels.

- RSNA Screening Mammography (Kaggle 2022): ``train.csv`` (one row per image, ``cancer`` per
  image) + ``train_images/<patient_id>/<image_id>.dcm``; laterality/view tags removed from
  the files (the CSV is the dataset's truth);
- VinDr-Mammo: ``breast-level_annotations.csv`` (BI-RADS per breast),
  ``finding_annotations.csv`` (boxes) + ``images/<study_id>/<image_id>.dicom``;
- CMMD: ``CMMD_clinicaldata_revision.csv`` (the spreadsheet saved as CSV; ID1, LeftRight,
  classification) + TCIA folders ``<ID1>/<study>/<series>/1-N.dcm``; some patients with the
  affected breast only, as in the dataset;
- CBIS-DDSM: ``mass_case_description_train_set.csv`` and ``calc_case_description_train_set.csv``
  + TCIA folders ``Mass-Training_<patient>_<LEFT|RIGHT>_<CC|MLO>/<uid>/<uid>/1-1.dcm`` for the
  breasts with an abnormality only.

Interval cancers of the synthetic cohort are written as not cancer (none of these datasets
knows them). Returned: what was written, per exam (slots and the label the dataset states).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from mammo_node.domain import Slot, View
from mammo_node.synth import SynthExam, SynthOptions, generate_exams

FORMATS = ("rsna", "vindr", "cmmd", "cbis-ddsm")


@dataclass
class WrittenExam:
    exam: SynthExam
    key: str  # the dataset's exam key (patient or study id)
    slots: list[Slot]
    cancer_sides: set[str] = field(default_factory=set)  # "L"/"R" the dataset calls cancer
    sop_of: dict[Slot, str] = field(default_factory=dict)  # the dataset's image id per slot


def _cancer_sides(exam: SynthExam) -> set[str]:
    if exam.outcome != "screening":
        return set()
    return {"L", "R"} if exam.cancer_laterality == "B" else {exam.cancer_laterality}


def write_rsna_layout(out_dir: Path, options: SynthOptions) -> list[WrittenExam]:
    out_dir = Path(out_dir)
    written = []
    rows = []
    for n, exam in enumerate(generate_exams(options)):
        patient = str(10000 + n)  # RSNA: one exam per (integer) patient id
        sides = _cancer_sides(exam)
        record = WrittenExam(exam, patient, sorted(exam.datasets), sides)
        for k, (slot, ds) in enumerate(sorted(exam.datasets.items())):
            image_id = str(1_000_000 + 10 * n + k)
            folder = out_dir / "train_images" / patient
            folder.mkdir(parents=True, exist_ok=True)
            for tag in ("ImageLaterality", "ViewPosition", "ViewCodeSequence", "Laterality"):
                if tag in ds:
                    delattr(ds, tag)
            ds.save_as(folder / f"{image_id}.dcm", enforce_file_format=True)
            record.sop_of[slot] = image_id
            rows.append(
                {
                    "site_id": "1",
                    "patient_id": patient,
                    "image_id": image_id,
                    "laterality": slot.laterality.value,
                    "view": slot.view.value,
                    "age": "55",
                    "cancer": int(slot.laterality.value in sides),
                    "biopsy": int(slot.laterality.value in sides),
                    "invasive": 0,
                    "BIRADS": "",
                    "implant": 0,
                    "density": exam.density.upper(),
                    "machine_id": "49",
                    "difficult_negative_case": "False",
                }
            )
        written.append(record)
    _write_csv(out_dir / "train.csv", rows)
    return written


def write_vindr_layout(out_dir: Path, options: SynthOptions) -> list[WrittenExam]:
    out_dir = Path(out_dir)
    breast_rows, finding_rows, written = [], [], []
    for n, exam in enumerate(generate_exams(options)):
        study = f"vstudy{n:05d}"
        sides = _cancer_sides(exam)
        record = WrittenExam(exam, study, sorted(exam.datasets), sides)
        lesions = {t.sop_instance_uid: t for t in exam.truth if t.kind != "benign_nodule"}
        for k, (slot, ds) in enumerate(sorted(exam.datasets.items())):
            image = f"vimg{n:05d}{k}"
            folder = out_dir / "images" / study
            folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(folder / f"{image}.dicom", enforce_file_format=True)
            record.sop_of[slot] = image
            positive = slot.laterality.value in sides
            birads = "BI-RADS 5" if positive else "BI-RADS 1"
            common = {
                "study_id": study,
                "series_id": f"s{n}",
                "image_id": image,
                "laterality": slot.laterality.value,
                "view_position": slot.view.value,
                "height": ds.Rows,
                "width": ds.Columns,
                "breast_birads": birads,
                "breast_density": f"DENSITY {exam.density.upper() or 'B'}",
                "split": "training",
            }
            breast_rows.append(common)
            lesion = lesions.get(str(ds.SOPInstanceUID))
            if positive and lesion is not None:
                finding_rows.append(
                    {
                        **common,
                        "finding_categories": "['Mass']",
                        "finding_birads": "BI-RADS 5",
                        "xmin": lesion.x + 0.5 - lesion.radius,
                        "ymin": lesion.y + 0.5 - lesion.radius,
                        "xmax": lesion.x + 0.5 + lesion.radius,
                        "ymax": lesion.y + 0.5 + lesion.radius,
                    }
                )
            else:
                finding_rows.append(
                    {
                        **common,
                        "finding_categories": "['No Finding']",
                        "finding_birads": "",
                        "xmin": "",
                        "ymin": "",
                        "xmax": "",
                        "ymax": "",
                    }
                )
        written.append(record)
    _write_csv(out_dir / "breast-level_annotations.csv", breast_rows)
    _write_csv(out_dir / "finding_annotations.csv", finding_rows)
    return written


def write_cmmd_layout(out_dir: Path, options: SynthOptions) -> list[WrittenExam]:
    """Every other cancer patient with the affected breast only (CMMD has many such)."""
    out_dir = Path(out_dir)
    rows, written = [], []
    for n, exam in enumerate(generate_exams(options)):
        patient = f"D1-{n + 1:04d}"
        sides = _cancer_sides(exam)
        slots = sorted(exam.datasets)
        if len(sides) == 1 and n % 2 == 0:
            slots = [s for s in slots if s.laterality.value in sides]
        record = WrittenExam(exam, patient, slots, sides)
        for k, slot in enumerate(slots):
            ds = exam.datasets[slot]
            ds.PatientID = patient
            folder = out_dir / patient / f"07-18-2010-NA-{n}" / f"1.000000-NA-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(folder / f"1-{k + 1}.dcm", enforce_file_format=True)
            record.sop_of[slot] = str(ds.SOPInstanceUID)
        for side in sorted({s.laterality.value for s in slots}):
            rows.append(
                {
                    "ID1": patient,
                    "LeftRight": side,
                    "Age": 50,
                    "number": len([s for s in slots if s.laterality.value == side]),
                    "abnormality": "mass",
                    "classification": "Malignant" if side in sides else "Benign",
                    "subtype": "",
                }
            )
        written.append(record)
    _write_csv(out_dir / "CMMD_clinicaldata_revision.csv", rows)
    return written


def write_cbis_ddsm_layout(out_dir: Path, options: SynthOptions) -> list[WrittenExam]:
    """Only breasts with an abnormality have images: cancers' affected side; normals get a
    benign finding on one breast (CBIS-DDSM holds abnormal cases only)."""
    out_dir = Path(out_dir)
    rows: dict[str, list[dict[str, object]]] = {"mass": [], "calc": []}
    written = []
    for n, exam in enumerate(generate_exams(options)):
        patient = f"P_{n + 1:05d}"
        sides = _cancer_sides(exam)
        shown = sorted(sides) or ["L" if n % 2 else "R"]
        slots = sorted(s for s in exam.datasets if s.laterality.value in shown)
        record = WrittenExam(exam, patient, slots, sides)
        kind = "mass" if n % 3 else "calc"
        for slot in slots:
            side = {"L": "LEFT", "R": "RIGHT"}[slot.laterality.value]
            folder_name = f"{kind.capitalize()}-Training_{patient}_{side}_{slot.view.value}"
            uid = f"1.3.6.1.4.1.9590.100.1.2.{n}{1 if slot.view is View.CC else 2}"
            folder = out_dir / folder_name / f"{uid}.1" / f"{uid}.2"
            folder.mkdir(parents=True, exist_ok=True)
            ds = exam.datasets[slot]
            ds.save_as(folder / "1-1.dcm", enforce_file_format=True)
            record.sop_of[slot] = folder_name
            malignant = slot.laterality.value in sides
            rows[kind].append(
                {
                    "patient_id": patient,
                    "breast_density": 2,
                    "left or right breast": side,
                    "image view": slot.view.value,
                    "abnormality id": 1,
                    "abnormality type": kind,
                    "assessment": 5 if malignant else 2,
                    "pathology": "MALIGNANT" if malignant else "BENIGN",
                    "subtlety": 3,
                    # the paths as the CSVs give them (they differ from TCIA's folders)
                    "image file path": f"{folder_name}/{uid}.1/{uid}.2/000000.dcm",
                    "cropped image file path": f"{folder_name}_1/{uid}.3/{uid}.4/000000.dcm",
                    "ROI mask file path": f"{folder_name}_1/{uid}.3/{uid}.4/000001.dcm",
                }
            )
        written.append(record)
    _write_csv(out_dir / "mass_case_description_train_set.csv", rows["mass"])
    _write_csv(out_dir / "calc_case_description_train_set.csv", rows["calc"])
    return written


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        fields = list(rows[0]) if rows else ["empty"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


__all__ = [
    "FORMATS",
    "WrittenExam",
    "write_cbis_ddsm_layout",
    "write_cmmd_layout",
    "write_rsna_layout",
    "write_vindr_layout",
]
