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

``habits=Habits(...)`` writes what an engineer has on disk after a real download instead of
the published layout: listed images whose file is missing (a Kaggle subset, an interrupted
TCIA/PhysioNet download), the dataset under a top folder (TCIA's ``manifest-<n>/CMMD``,
``CBIS-DDSM/`` with TCIA's descriptive folder names), other DICOM file extensions, and
table headers and values in the spellings the datasets' copies use.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from mammo_node.domain import Slot, View
from mammo_node.synth import SynthExam, SynthOptions, generate_exams

FORMATS = ("rsna", "vindr", "cmmd", "cbis-ddsm")


@dataclass(frozen=True)
class Habits:
    """How a real download differs from the published layout (all off: the published one).

    - ``missing_files``: the first N exams lose a listed image's file (CMMD: every other one
      of them loses the whole patient, the others one image);
    - ``top_folder``: the dataset (RSNA, VinDr) or its image folders (CMMD, CBIS-DDSM, with
      TCIA's descriptive folder names) under this folder of the output directory;
    - ``tables_beside_images``: CMMD's and CBIS-DDSM's tables in ``top_folder`` too;
    - ``messy_tables``: headers in other case and spacing, values spelled as copies of the
      datasets do (``Left``, ``cc``, ``True``, ``1.0``, ``BI-RADS 4A``, ``MALIGNANT``);
    - ``extension``: RSNA's or VinDr's image file extension (e.g. ``.DICOM``).
    """

    missing_files: int = 0
    top_folder: str = ""
    tables_beside_images: bool = False
    messy_tables: bool = False
    extension: str = ""

    def __post_init__(self) -> None:
        if self.missing_files < 0:
            raise ValueError(f'"missing_files" should be >= 0, got {self.missing_files}.')
        if self.extension and not self.extension.startswith("."):
            raise ValueError(f'"extension" should start with ".", got {self.extension!r}.')
        if self.tables_beside_images and not self.top_folder:
            raise ValueError('"tables_beside_images" needs a "top_folder".')

    def lost_slots(self, n: int, slots: list[Slot]) -> list[Slot]:
        """The slots of exam n whose files are not written."""
        if n >= self.missing_files or not slots:
            return []
        return [slots[-1] if n % 2 == 0 else slots[0]]

    def side(self, laterality: str, n: int, *, long: bool = False) -> str:
        word = {"L": "LEFT", "R": "RIGHT"}[laterality]
        if not self.messy_tables:
            return word if long else laterality
        return (word.capitalize(), laterality.lower(), word)[n % 3]

    def view(self, view: View, n: int) -> str:
        if not self.messy_tables:
            return view.value
        return (view.value.lower(), view.value.capitalize())[n % 2]

    def flag(self, value: bool, n: int) -> str:
        if not self.messy_tables:
            return str(int(value))
        return (str(value), f"{float(value):.1f}")[n % 2]

    def birads(self, category: int, n: int) -> str:
        if not self.messy_tables:
            return f"BI-RADS {category}"
        spelled = "BI-RADS 4A" if category == 4 else f"bi-rads {category}"
        return (spelled, str(category))[n % 2]

    def word(self, value: str, n: int) -> str:
        return (value.upper(), value.lower())[n % 2] if self.messy_tables else value

    def header(self, name: str, k: int) -> str:
        if not self.messy_tables:
            return name
        return (name.title(), f" {name.upper()}", name.replace("_", " ") + " ")[k % 3]


PUBLISHED = Habits()


@dataclass
class WrittenExam:
    exam: SynthExam
    key: str  # the dataset's exam key (patient or study id)
    slots: list[Slot]  # the slots the dataset lists
    cancer_sides: set[str] = field(default_factory=set)  # "L"/"R" the dataset calls cancer
    sop_of: dict[Slot, str] = field(default_factory=dict)  # the dataset's image id per slot
    missing: list[Slot] = field(default_factory=list)  # listed, but no file on disk


def _cancer_sides(exam: SynthExam) -> set[str]:
    if exam.outcome != "screening":
        return set()
    return {"L", "R"} if exam.cancer_laterality == "B" else {exam.cancer_laterality}


def write_rsna_layout(
    out_dir: Path, options: SynthOptions, *, habits: Habits = PUBLISHED
) -> list[WrittenExam]:
    base = Path(out_dir) / habits.top_folder
    written = []
    rows = []
    for n, exam in enumerate(generate_exams(options)):
        patient = str(10000 + n)  # RSNA: one exam per (integer) patient id
        sides = _cancer_sides(exam)
        record = WrittenExam(exam, patient, sorted(exam.datasets), sides)
        record.missing = habits.lost_slots(n, record.slots)
        for k, (slot, ds) in enumerate(sorted(exam.datasets.items())):
            image_id = str(1_000_000 + 10 * n + k)
            folder = base / "train_images" / patient
            folder.mkdir(parents=True, exist_ok=True)
            for tag in ("ImageLaterality", "ViewPosition", "ViewCodeSequence", "Laterality"):
                if tag in ds:
                    delattr(ds, tag)
            if slot not in record.missing:
                name = f"{image_id}{habits.extension or '.dcm'}"
                ds.save_as(folder / name, enforce_file_format=True)
            record.sop_of[slot] = image_id
            cancer = slot.laterality.value in sides
            rows.append(
                {
                    "site_id": "1",
                    "patient_id": patient,
                    "image_id": image_id,
                    "laterality": habits.side(slot.laterality.value, n + k),
                    "view": habits.view(slot.view, n + k),
                    "age": "55",
                    "cancer": habits.flag(cancer, n),
                    "biopsy": int(cancer),
                    "invasive": 0,
                    "BIRADS": "",
                    "implant": 0,
                    "density": exam.density.upper(),
                    "machine_id": "49",
                    "difficult_negative_case": "False",
                }
            )
        written.append(record)
    _write_csv(base / "train.csv", rows, habits)
    return written


def write_vindr_layout(
    out_dir: Path, options: SynthOptions, *, habits: Habits = PUBLISHED
) -> list[WrittenExam]:
    base = Path(out_dir) / habits.top_folder
    breast_rows, finding_rows, written = [], [], []
    for n, exam in enumerate(generate_exams(options)):
        study = f"vstudy{n:05d}"
        sides = _cancer_sides(exam)
        record = WrittenExam(exam, study, sorted(exam.datasets), sides)
        record.missing = habits.lost_slots(n, record.slots)
        lesions = {t.sop_instance_uid: t for t in exam.truth if t.kind != "benign_nodule"}
        for k, (slot, ds) in enumerate(sorted(exam.datasets.items())):
            image = f"vimg{n:05d}{k}"
            folder = base / "images" / study
            folder.mkdir(parents=True, exist_ok=True)
            if slot not in record.missing:
                name = f"{image}{habits.extension or '.dicom'}"
                ds.save_as(folder / name, enforce_file_format=True)
            record.sop_of[slot] = image
            positive = slot.laterality.value in sides
            common = {
                "study_id": study,
                "series_id": f"s{n}",
                "image_id": image,
                "laterality": habits.side(slot.laterality.value, n + k),
                "view_position": habits.view(slot.view, n + k),
                "height": ds.Rows,
                "width": ds.Columns,
                "breast_birads": habits.birads(4 + n % 2 if positive else 1 + k % 3, n + k),
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
                        "finding_birads": habits.birads(4 + n % 2, n),
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
    _write_csv(base / "breast-level_annotations.csv", breast_rows, habits)
    _write_csv(base / "finding_annotations.csv", finding_rows, habits)
    return written


def write_cmmd_layout(
    out_dir: Path, options: SynthOptions, *, habits: Habits = PUBLISHED
) -> list[WrittenExam]:
    """Every other cancer patient with the affected breast only (CMMD has many such)."""
    out_dir = Path(out_dir)
    images = out_dir / habits.top_folder
    rows, written = [], []
    for n, exam in enumerate(generate_exams(options)):
        patient = f"D1-{n + 1:04d}"
        sides = _cancer_sides(exam)
        slots = sorted(exam.datasets)
        if len(sides) == 1 and n % 2 == 0:
            slots = [s for s in slots if s.laterality.value in sides]
        record = WrittenExam(exam, patient, slots, sides)
        lost = habits.lost_slots(n, slots)
        record.missing = list(slots) if lost and n % 2 == 0 else lost  # whole patient or one
        for k, slot in enumerate(slots):
            ds = exam.datasets[slot]
            ds.PatientID = patient
            record.sop_of[slot] = str(ds.SOPInstanceUID)
            if slot in record.missing:
                continue
            folder = images / patient / f"07-18-2010-NA-{n}" / f"1.000000-NA-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(folder / f"1-{k + 1}.dcm", enforce_file_format=True)
        for side in sorted({s.laterality.value for s in slots}):
            rows.append(
                {
                    "ID1": patient,
                    "LeftRight": habits.side(side, n),
                    "Age": 50,
                    "number": len([s for s in slots if s.laterality.value == side]),
                    "abnormality": "mass",
                    "classification": habits.word("Malignant" if side in sides else "Benign", n),
                    "subtype": "",
                }
            )
        written.append(record)
    tables = images if habits.tables_beside_images else out_dir
    _write_csv(tables / "CMMD_clinicaldata_revision.csv", rows, habits)
    return written


def write_cbis_ddsm_layout(
    out_dir: Path, options: SynthOptions, *, habits: Habits = PUBLISHED
) -> list[WrittenExam]:
    """Only breasts with an abnormality have images: cancers' affected side; normals get a
    benign finding on one breast (CBIS-DDSM holds abnormal cases only)."""
    out_dir = Path(out_dir)
    images = out_dir / habits.top_folder
    rows: dict[str, list[dict[str, object]]] = {"mass": [], "calc": []}
    written = []
    for n, exam in enumerate(generate_exams(options)):
        patient = f"P_{n + 1:05d}"
        sides = _cancer_sides(exam)
        shown = sorted(sides) or ["L" if n % 2 else "R"]
        slots = sorted(s for s in exam.datasets if s.laterality.value in shown)
        record = WrittenExam(exam, patient, slots, sides)
        record.missing = habits.lost_slots(n, slots)
        kind = "mass" if n % 3 else "calc"
        for k, slot in enumerate(slots):
            side = {"L": "LEFT", "R": "RIGHT"}[slot.laterality.value]
            folder_name = f"{kind.capitalize()}-Training_{patient}_{side}_{slot.view.value}"
            uid = f"1.3.6.1.4.1.9590.100.1.2.{n}{1 if slot.view is View.CC else 2}"
            study, series = f"{uid}.1", f"{uid}.2"
            if habits.top_folder:  # TCIA's downloader names folders by date and description
                study, series = f"07-20-2016-DDSM-{n:05d}", f"1.000000-full mammogram images-{k}"
            folder = images / folder_name / study / series
            if slot not in record.missing or n % 2 == 0:  # an interrupted one leaves folders
                folder.mkdir(parents=True, exist_ok=True)
            if slot not in record.missing:
                exam.datasets[slot].save_as(folder / "1-1.dcm", enforce_file_format=True)
            record.sop_of[slot] = folder_name
            malignant = slot.laterality.value in sides
            rows[kind].append(
                {
                    "patient_id": patient,
                    "breast_density": 2,
                    "left or right breast": habits.side(slot.laterality.value, n + k, long=True),
                    "image view": habits.view(slot.view, n + k),
                    "abnormality id": 1,
                    "abnormality type": kind,
                    "assessment": 5 if malignant else 2,
                    "pathology": habits.word("MALIGNANT" if malignant else "BENIGN", n + k),
                    "subtlety": 3,
                    # the paths as the CSVs give them (they differ from TCIA's folders)
                    "image file path": f"{folder_name}/{uid}.1/{uid}.2/000000.dcm",
                    "cropped image file path": f"{folder_name}_1/{uid}.3/{uid}.4/000000.dcm",
                    "ROI mask file path": f"{folder_name}_1/{uid}.3/{uid}.4/000001.dcm",
                }
            )
        written.append(record)
    tables = images if habits.tables_beside_images else out_dir
    _write_csv(tables / "mass_case_description_train_set.csv", rows["mass"], habits)
    _write_csv(tables / "calc_case_description_train_set.csv", rows["calc"], habits)
    return written


def _write_csv(path: Path, rows: list[dict[str, object]], habits: Habits = PUBLISHED) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        fields = list(rows[0]) if rows else ["empty"]
        writer = csv.writer(fh)
        writer.writerow([habits.header(name, k) for k, name in enumerate(fields)])
        writer.writerows([row[name] for name in fields] for row in rows)


__all__ = [
    "FORMATS",
    "PUBLISHED",
    "Habits",
    "WrittenExam",
    "write_cbis_ddsm_layout",
    "write_cmmd_layout",
    "write_rsna_layout",
    "write_vindr_layout",
]
