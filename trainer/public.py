"""Readers of public mammography datasets: their layouts into a manifest (``index --format``).

Label mappings (the paper's labels: a screening-detected cancer makes its breast's images
positive; everything else is negative):

- ``rsna`` (RSNA Screening Mammography, Kaggle 2022): exam = ``patient_id`` (one screening
  exam each); slot from ``laterality``/``view`` of train.csv (other views are left out);
  ``cancer`` = 1 (or ``1.0``, ``True``) on an image -> screening cancer on that breast; else
  normal. No interval cancers, no lesion positions.
- ``vindr`` (VinDr-Mammo): exam = ``study_id`` (also the patient: the dataset has no patient
  ids); no outcomes are published, so breast BI-RADS 4 or 5 is the stated proxy for a
  screening-detected cancer on that breast (BI-RADS 1-3 -> negative); boxes of findings
  with BI-RADS 4-5 give the lesion truth (centre, radius = half the longer side).
- ``cmmd`` (Chinese Mammography Database): exam = ``ID1``, read from each file's PatientID
  (or, failing that, a folder named by an ID1) and checked against the clinical table; a
  ``Malignant`` classification for a side -> screening cancer on that breast; ``Benign`` ->
  negative; slots from the DICOM tags (the node's rules). Many patients have the affected
  breast only: exams keep each breast imaged in both views (``breasts="any"``; exam score =
  max over those).
- ``cbis-ddsm``: exam = ``patient_id``; ``pathology`` MALIGNANT on a side -> screening cancer
  on that breast; BENIGN / BENIGN_WITHOUT_CALLBACK -> negative; images are found by the
  first folder of ``image file path`` (the CSV's deeper path differs from TCIA's download);
  only breasts with an abnormality were scanned (``breasts="any"``).

Where the files may be: the tables in DIR or, failing that, at the shallowest level below it
that has them, down to four levels (a download's top folder, e.g.
``rsna-breast-cancer-detection/``; PhysioNet's ``physionet.org/files/vindr-mammo/1.0.0/``);
RSNA/VinDr images beside their table, as ``.dcm`` or ``.dicom`` in any case; CBIS-DDSM's image
folders in DIR or up to three levels down (TCIA's
``CBIS-DDSM/<Mass-Training_...>/<date-desc>/<series-desc>/1-1.dcm``, the NBIA Data Retriever's
``manifest-<n>/CBIS-DDSM/...`` with the tables beside it); CMMD's files anywhere below DIR
(TCIA's ``manifest-<n>/CMMD/<ID1>/...``). Table headers match in any case, with spaces or
underscores.

Exams without exactly one image per kept slot are left out with a reason, as the paper does.
A listed image whose file is not on disk (a partial download) is left out: its exam is left
out with reason ``file_missing`` unless it keeps a complete breast (``breasts="any"``); one
log line counts them, and only an index with no usable exam left is an error.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mammo_node.domain import SLOTS, Laterality, Slot, View
from trainer.data import ExamRecord, ImageRecord, LesionTruth, Manifest, scan_dicom
from trainer.errors import DataError

logger = logging.getLogger(__name__)

FORMATS = ("rsna", "vindr", "cmmd", "cbis-ddsm")
DICOM_SUFFIXES = (".dcm", ".dicom")  # RSNA's and VinDr's, in any case
TABLE_DEPTH = 4  # levels below DIR searched for a dataset's tables
TRUE_FLAGS = {"1", "1.0", "true", "yes"}
FALSE_FLAGS = {"0", "0.0", "false", "no"}
BIRADS = re.compile(r"(?:bi-?\s*rads)?[\s:_-]*([0-6])\s*[abc]?", re.IGNORECASE)


@dataclass(frozen=True)
class FoundImage:
    exam: str
    patient: str
    sop: str
    path: str  # relative to the data directory
    slot: Slot
    source: str  # where the slot came from


@dataclass(frozen=True)
class MissingImage:
    """An image a table lists whose file is not on disk (a partial download)."""

    exam: str
    slot: Slot | None  # None: none of the exam's images is on disk
    listed_in: str  # the table's file name


def _column_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


def _table(
    where: Path, header: Sequence[str], rows: Iterable[Sequence[str]], required: Iterable[str]
) -> list[dict[str, str]]:
    """Rows as {required column: stripped value}; headers match in any case and spacing."""
    position: dict[str, int] = {}
    for n, name in enumerate(header):
        position.setdefault(_column_key(name), n)
    missing = [r for r in required if _column_key(r) not in position]
    if missing:
        raise DataError(f'"{where}" lacks column(s) {missing}; it has {list(header)}.')
    columns = {r: position[_column_key(r)] for r in required}
    return [{r: _cell(row, n) for r, n in columns.items()} for row in rows]


def _cell(row: Sequence[str], n: int) -> str:
    return (row[n] or "").strip() if n < len(row) else ""


def _rows(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f'"{path}" does not exist; is this the dataset\'s top directory?')
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        return _table(path, header, reader, required)


def _folder_levels(
    data_dir: Path, depth: int, *, stop: Callable[[Path], bool] = lambda folder: False
) -> Iterator[list[Path]]:
    """DIR, then its folders level by level (sorted) down to ``depth`` levels below it, not
    descending into a folder for which ``stop`` is true."""
    level = [data_dir]
    for n in range(depth + 1):
        yield level
        if n < depth:
            level = [c for f in level if not stop(f) for c in sorted(f.iterdir()) if c.is_dir()]


def _find_tables(data_dir: Path, pattern: str) -> list[Path]:
    """Tables matching pattern in DIR, else at the shallowest level below it that has any,
    down to ``TABLE_DEPTH`` levels (a download's top folder; PhysioNet's ``wget -r`` puts a
    dataset in ``physionet.org/files/<name>/<version>/``)."""
    for level in _folder_levels(data_dir, TABLE_DEPTH):
        found = sorted(p for folder in level for p in folder.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def _find_table(data_dir: Path, name: str) -> Path:
    found = _find_tables(data_dir, name)
    if len(found) > 1:
        where = ", ".join(str(p.parent.relative_to(data_dir)) for p in found)
        raise DataError(
            f'Several "{name}" below "{data_dir}" ({where}); give the one dataset folder as '
            "DATA_DIR."
        )
    return found[0] if found else data_dir / name


def _slot(laterality: str, view: str) -> Slot | None:
    lat = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(laterality.strip().upper())
    v = view.strip().upper()
    if lat is None or v not in {"CC", "MLO"}:
        return None
    return Slot(Laterality(lat), View(v))


def _flag(text: str, where: str) -> bool:
    value = text.strip().lower()
    if value in TRUE_FLAGS:
        return True
    if value in FALSE_FLAGS:
        return False
    raise DataError(f"{where}: should be 0/1 (or True/False), got {text!r}.")


def _birads(text: str, where: str) -> int:
    """The BI-RADS category of "BI-RADS 4", "4", "BI-RADS 4A" (0 for an empty cell)."""
    if not text.strip():
        return 0
    match = BIRADS.fullmatch(text.strip())
    if match is None:
        raise DataError(f'{where}: should be a BI-RADS category such as "BI-RADS 4", got {text!r}.')
    return int(match.group(1))


class _DicomFiles:
    """``folder/<stem>.dcm`` or ``.dicom`` in any case; each folder is listed once."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._listed: dict[Path, dict[str, Path]] = {}

    def find(self, folder: Path, stem: str) -> str | None:
        if folder not in self._listed:
            files = folder.iterdir() if folder.is_dir() else ()
            self._listed[folder] = {p.name.lower(): p for p in files if p.is_file()}
        names = self._listed[folder]
        for suffix in DICOM_SUFFIXES:
            path = names.get(f"{stem}{suffix}".lower())
            if path is not None:
                return str(path.relative_to(self.data_dir))
        return None


def _absent_detail(absent: list[MissingImage]) -> str:
    slots = sorted(str(m.slot) for m in absent if m.slot is not None)
    tables = ", ".join(sorted({m.listed_in for m in absent}))
    if not slots:
        return f"listed in {tables}; no DICOM file of it on disk"
    return f"no file on disk for {', '.join(slots)} (listed in {tables})"


def _leave_out_reason(
    per_slot: dict[Slot, list[FoundImage]],
    absent: list[MissingImage],
    sides: set[str],
    breasts: str,
) -> tuple[str, str] | None:
    """(reason, detail) for leaving an exam out, or None to keep it."""
    listed = Counter({slot: len(images) for slot, images in per_slot.items()})
    listed.update(m.slot for m in absent if m.slot is not None)
    doubled = sorted(str(s) for s, n in listed.items() if n > 1)
    if doubled:
        return "not_one_image_per_slot", f"several images for {', '.join(doubled)}"
    missing = [str(s) for s in SLOTS if s not in per_slot]
    kept_sides = _complete_sides(per_slot)
    problem = None
    if breasts == "both" and missing:
        problem = ("not_one_image_per_slot", f"missing {', '.join(missing)}")
    elif not kept_sides:
        problem = ("not_one_image_per_slot", "no breast with both CC and MLO")
    elif not sides <= kept_sides:
        problem = ("cancer_breast_not_imaged", "the breast with the cancer lacks CC or MLO")
    if problem and absent:
        return "file_missing", _absent_detail(absent)
    return problem


def _complete_sides(per_slot: dict[Slot, list[FoundImage]]) -> set[str]:
    return {
        lat.value
        for lat in Laterality
        if Slot(lat, View.CC) in per_slot and Slot(lat, View.MLO) in per_slot
    }


def _not_on_disk(absent: list[MissingImage]) -> str:
    images = sum(m.slot is not None for m in absent)
    exams = len(absent) - images
    parts = []
    if images:
        parts.append(f"{images} listed image(s)")
    if exams:
        parts.append(f"{exams} listed exam(s) with no file")
    return " and ".join(parts)


def assemble(
    data_dir: Path,
    images: list[FoundImage],
    cancer_sides: dict[str, set[str]],
    *,
    absent: Sequence[MissingImage] = (),
    left_out: Sequence[dict[str, str]] = (),
    truth: dict[str, LesionTruth] | None = None,
    breasts: str = "both",
) -> Manifest:
    """Group images into exams; keep exams with one image per slot of every kept breast.

    ``absent``: listed images not on disk (their exams are left out, or keep a complete
    breast where ``breasts="any"``); ``left_out``: exams the reader already left out."""
    by_exam: dict[str, list[FoundImage]] = defaultdict(list)
    for image in images:
        by_exam[image.exam].append(image)
    absent_of: dict[str, list[MissingImage]] = defaultdict(list)
    for missing in absent:
        absent_of[missing.exam].append(missing)
    exams: list[ExamRecord] = []
    excluded = list(left_out)
    kept_despite_absent = 0
    for key in sorted(set(by_exam) | set(absent_of)):
        found = by_exam.get(key, [])
        per_slot: dict[Slot, list[FoundImage]] = defaultdict(list)
        for image in found:
            per_slot[image.slot].append(image)
        sides = cancer_sides.get(key, set())
        problem = _leave_out_reason(per_slot, absent_of.get(key, []), sides, breasts)
        if problem:
            excluded.append({"study_uid": key, "reason": problem[0], "detail": problem[1]})
            continue
        kept_despite_absent += key in absent_of
        kept_sides = _complete_sides(per_slot)
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
    if absent:
        logger.warning(
            "Not on disk: %s (a partial download?); %d exam(s) left out (file_missing), "
            "%d kept with their complete breast only.",
            _not_on_disk(list(absent)),
            sum(x["reason"] == "file_missing" for x in excluded),
            kept_despite_absent,
        )
    if not exams:
        also = f"; not on disk: {_not_on_disk(list(absent))}" if absent else ""
        raise DataError(f'No usable exam found in "{data_dir}" (left out: {len(excluded)}{also}).')
    indexed = {i.sop_instance_uid for e in exams for i in e.images.values()}
    return Manifest(
        Path(data_dir).resolve(),
        exams,
        {k: v for k, v in (truth or {}).items() if k in indexed},
        excluded,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )


def read_rsna(data_dir: Path) -> Manifest:
    table = _find_table(data_dir, "train.csv")
    rows = _rows(table, ("patient_id", "image_id", "laterality", "view", "cancer"))
    files = _DicomFiles(data_dir)
    images, absent, sides = [], [], defaultdict(set)
    for n, row in enumerate(rows, start=2):
        slot = _slot(row["laterality"], row["view"])
        if slot is None:
            continue  # AT, LM, ML, LMO views: not one of the four slots
        patient, image = row["patient_id"], row["image_id"]
        if _flag(row["cancer"], f"{table.name} row {n}, cancer"):
            sides[patient].add(slot.laterality.value)
        path = files.find(table.parent / "train_images" / patient, image)
        if path is None:
            absent.append(MissingImage(patient, slot, table.name))
            continue
        images.append(FoundImage(patient, patient, f"rsna:{image}", path, slot, "train.csv"))
    return assemble(data_dir, images, dict(sides), absent=absent)


def read_vindr(data_dir: Path) -> Manifest:
    table = _find_table(data_dir, "breast-level_annotations.csv")
    rows = _rows(table, ("study_id", "image_id", "laterality", "view_position", "breast_birads"))
    files = _DicomFiles(data_dir)
    images, absent, sides = [], [], defaultdict(set)
    for n, row in enumerate(rows, start=2):
        slot = _slot(row["laterality"], row["view_position"])
        if slot is None:
            continue
        study, image = row["study_id"], row["image_id"]
        if _birads(row["breast_birads"], f"{table.name} row {n}, breast_birads") >= 4:
            sides[study].add(slot.laterality.value)
        path = files.find(table.parent / "images" / study, image)
        if path is None:
            absent.append(MissingImage(study, slot, table.name))
            continue
        images.append(FoundImage(study, study, f"vindr:{image}", path, slot, table.name))
    truth: dict[str, LesionTruth] = {}
    findings = table.parent / "finding_annotations.csv"
    if findings.is_file():
        columns = ("image_id", "finding_birads", "xmin", "ymin", "xmax", "ymax")
        for n, row in enumerate(_rows(findings, columns), start=2):
            where = f"{findings.name} row {n}, finding_birads"
            if _birads(row["finding_birads"], where) < 4 or not row["xmin"]:
                continue
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            lesion = LesionTruth((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2)
            sop = f"vindr:{row['image_id']}"
            if sop not in truth or lesion.radius > truth[sop].radius:
                truth[sop] = lesion
    return assemble(data_dir, images, dict(sides), absent=absent, truth=truth)


def _clinical_rows(data_dir: Path) -> tuple[str, list[dict[str, str]]]:
    """(the table's file name, its rows): the CSV, else the published .xlsx."""
    csv_path = _find_table(data_dir, "CMMD_clinicaldata_revision.csv")
    xlsx = _find_table(data_dir, "CMMD_clinicaldata_revision.xlsx")
    required = ("ID1", "LeftRight", "classification")
    if csv_path.is_file() or not xlsx.is_file():
        return csv_path.name, _rows(csv_path, required)
    try:
        import openpyxl
    except ImportError:
        raise DataError(
            f'"{xlsx}" needs openpyxl (pip install openpyxl), or save the sheet as '
            f'"{csv_path.name}" beside it.'
        ) from None
    sheet = openpyxl.load_workbook(xlsx, read_only=True).active
    values = [["" if v is None else str(v) for v in r] for r in sheet.iter_rows(values_only=True)]
    return xlsx.name, _table(xlsx, values[0] if values else [], values[1:], required)


def read_cmmd(data_dir: Path) -> Manifest:
    table, rows = _clinical_rows(data_dir)
    listed = {row["ID1"] for row in rows if row["ID1"]}
    sides: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        side = _slot(row["LeftRight"], "CC")
        if row["classification"].lower() == "malignant" and side is not None:
            sides[row["ID1"]].add(side.laterality.value)
    images, unlisted, seen = [], set(), set()
    for found in scan_dicom(data_dir):
        seen.add(found.patient_id)  # on disk, even when its view is not one of the slots
        if found.record is None:
            continue
        # the file's PatientID is the ID1; a folder named by it when PatientID was rewritten
        names = [found.patient_id, *Path(found.record.path).parts[:-1]]
        patient = next((name for name in names if name in listed), None)
        if patient is None:
            unlisted.add(found.study_uid)
            continue
        seen.add(patient)
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
    left_out = [
        {
            "study_uid": study,
            "reason": "not_in_clinical_table",
            "detail": f"neither its PatientID nor its folders name an ID1 of {table}",
        }
        for study in sorted(unlisted)
    ]
    absent = [MissingImage(key, None, table) for key in sorted(listed - seen)]
    return assemble(data_dir, images, dict(sides), absent=absent, left_out=left_out, breasts="any")


def _image_folders(data_dir: Path, wanted: set[str], depth: int = 3) -> dict[str, Path]:
    """The folders named in ``wanted``, up to ``depth`` levels below DIR (TCIA's
    ``CBIS-DDSM/`` top folder; the NBIA Data Retriever's ``manifest-<n>/CBIS-DDSM/``),
    breadth first: the shallowest of a name wins, and a found folder is not searched."""
    folders: dict[str, Path] = {}

    def found(folder: Path) -> bool:
        return folder != data_dir and folder.name in wanted

    for level in _folder_levels(data_dir, depth, stop=found):
        for folder in filter(found, level):
            folders.setdefault(folder.name, folder)
        if len(folders) == len(wanted):
            break
    return folders


def _first_dicom(folder: Path | None) -> Path | None:
    if folder is None:
        return None
    files = (p for p in folder.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file())
    return min(files, default=None)


def _image_folder(row: dict[str, str]) -> str:
    """The first folder of a row's ``image file path`` (the CSVs' deeper path is not TCIA's)."""
    return row["image file path"].replace("\\", "/").split("/")[0]


def read_cbis_ddsm(data_dir: Path) -> Manifest:
    tables = _find_tables(data_dir, "*_case_description_*.csv")
    if not tables:
        raise DataError(
            f'No "*_case_description_*.csv" in "{data_dir}" or up to {TABLE_DEPTH} levels below it.'
        )
    columns = ("patient_id", "left or right breast", "image view", "pathology", "image file path")
    listed = [(table, row) for table in tables for row in _rows(table, columns)]
    folders = _image_folders(data_dir, {_image_folder(row) for _, row in listed})
    images: dict[tuple[str, Slot], FoundImage] = {}
    absent: dict[tuple[str, Slot], MissingImage] = {}
    sides: dict[str, set[str]] = defaultdict(set)
    for table, row in listed:
        slot = _slot(row["left or right breast"], row["image view"])
        if slot is None:
            continue
        patient = row["patient_id"]
        folder = _image_folder(row)
        if row["pathology"].upper() == "MALIGNANT":
            sides[patient].add(slot.laterality.value)
        if (patient, slot) in images:
            continue  # the same mammogram listed for another abnormality
        file = _first_dicom(folders.get(folder))
        if file is None:
            absent.setdefault((patient, slot), MissingImage(patient, slot, table.name))
            continue
        absent.pop((patient, slot), None)
        images[(patient, slot)] = FoundImage(
            patient,
            patient,
            f"cbis:{folder}",
            str(file.relative_to(data_dir)),
            slot,
            table.name,
        )
    return assemble(
        data_dir,
        list(images.values()),
        dict(sides),
        absent=list(absent.values()),
        breasts="any",
    )


READERS = {"rsna": read_rsna, "vindr": read_vindr, "cmmd": read_cmmd, "cbis-ddsm": read_cbis_ddsm}


def index_public(data_dir: Path, fmt: str) -> Manifest:
    if fmt not in READERS:
        raise DataError(f'Argument "format" should be one of {FORMATS}, got {fmt!r}.')
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise DataError(f'Data directory "{data_dir}" does not exist.')
    return READERS[fmt](data_dir)
