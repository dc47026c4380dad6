"""Real mammograms that are not DICOM, wrapped into DICOM the way real archives hold them.

- ``wrap_nyu_exam``: the NYU exam of the GMIC sample data (16-bit PNG, 12-bit values) becomes
  four MG For Presentation images in one study, pixels untouched. The orientation tags say
  where the chest wall is in each stored image (found from the pixels, not assumed).
- ``nyu_lesion_truth``: the benign-lesion masks, which GMIC drew on its cropped and
  right-flipped 2944x1920 frame, mapped back to the stored grid of the original images.
- ``wrap_mias``: mini-MIAS digitised films (8-bit PGM, 200 um) become Secondary Capture
  "digitised film" objects, with each lesion centre converted from Info.txt's bottom-left
  origin to stored pixel coordinates.
- ``wrap_image``: the generic wrapper both use.

UIDs are derived from the source (file content and names), so wrapping twice gives the same
objects and a re-send cannot create duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from mammo_node import __version__
from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.errors import MammoNodeError
from mammo_node.synth import (
    LesionTruth,
    PatientIdentity,
    StudyIdentity,
    code_item,
    make_uid,
    mg_for_presentation_dataset,
    patient_study_series,
    with_file_meta,
)
from mammo_node.synth import patient_orientation as orientation_of

logger = logging.getLogger(__name__)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
NYU_DIR = "nyu-gmic-exam0__nyukat-GMIC"
MIAS_DIR = "mini-mias-subset__theidentity-MammogramVisualization"
MIAS_PIXEL_MM = 0.2
# The GMIC sample PNGs carry no pixel spacing; 0.1 mm is an assumption (typical of the FFDM
# units behind the NYU data set), not a measured value. Pass another to wrap_nyu_exam.
NYU_ASSUMED_PIXEL_MM = 0.1
_WRAP_MANUFACTURER = "mammo-node wrap"


class WrapError(MammoNodeError, ValueError):
    """A source image or its annotations cannot be wrapped."""


# --------------------------------------------------------------------------- generic


def chest_wall_side(pixels: np.ndarray, photometric: str = "MONOCHROME2") -> str:
    """``"left"`` or ``"right"``: the side of the stored image where the chest wall is.

    The breast is widest at the chest wall and narrows towards the nipple, so the tissue's
    centroid lies nearer the chest-wall edge of its bounding columns. The outer 3 % of rows
    and columns are left out (film edges and markers).
    """
    values = pixels.astype(np.float32)
    if photometric == "MONOCHROME1":
        values = values.max() - values
    top = float(np.percentile(values, 99))
    if top <= 0:
        raise WrapError('Argument "pixels" holds no tissue: every value is 0.')
    rows, cols = values.shape
    mr, mc = max(1, rows * 3 // 100), max(1, cols * 3 // 100)
    tissue = values[mr : rows - mr, mc : cols - mc] > 0.25 * top
    height = tissue.mean(axis=0)
    present = np.flatnonzero(height > 0.05)
    if present.size < 2:
        raise WrapError('Argument "pixels" holds too little tissue to find the chest wall.')
    x0, x1 = present[0], present[-1]
    centroid = float((np.arange(height.size) * height).sum() / height.sum())
    return "left" if centroid - x0 < x1 - centroid else "right"


def wrap_image(
    pixels: np.ndarray,
    *,
    laterality: Laterality | str | None,
    view: View | str,
    sop_class: str = "mg",
    patient_id: str,
    study_uid: str | None = None,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    pixel_spacing_mm: float,
    patient_orientation: Sequence[str] | None = None,
    patient_name: str = "",
    patient_birth_date: str = "",
    study_date: str = "",
    study_time: str = "",
    accession: str = "",
    series_number: int = 1,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    description: str = "",
) -> Dataset:
    """Wrap one greyscale image, stored as given (never flipped), into a DICOM dataset.

    ``sop_class`` "mg": Digital Mammography X-Ray Image - For Presentation (uint16 pixels).
    ``sop_class`` "sc": Secondary Capture, ConversionType DF (digitised film), uint8 or uint16.
    ``patient_orientation`` None: found from the pixels (chest wall side) and the laterality.
    Missing UIDs are derived from the pixels and the identifying arguments.
    """
    side = Laterality(laterality.upper()) if isinstance(laterality, str) else laterality
    view_ = View(view.upper()) if isinstance(view, str) else view
    if sop_class not in ("mg", "sc"):
        raise WrapError(f'Argument "sop_class" should be "mg" or "sc"; got "{sop_class}".')
    if side is None and sop_class == "mg":
        raise WrapError('Argument "laterality" is required for an MG image; got None.')
    if pixels.ndim != 2:
        raise WrapError(f'Argument "pixels" should be 2-D; got shape {pixels.shape}.')
    if not 1 <= bits_stored <= 8 * pixels.dtype.itemsize:
        raise WrapError(
            f'Argument "bits_stored" should fit the {pixels.dtype} pixels; got {bits_stored}.'
        )
    if patient_orientation is None and side is not None:
        left = chest_wall_side(pixels, photometric) == "left"
        patient_orientation = patient_orientation_for(side, view_, left)
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    study_uid = study_uid or make_uid("wrap-study", patient_id, accession, study_date)
    series_uid = series_uid or make_uid("wrap-series", study_uid, digest, sop_class)
    sop_uid = sop_instance_uid or make_uid("wrap-image", study_uid, digest, sop_class)
    patient = PatientIdentity(patient_id, patient_name, patient_birth_date)
    study = StudyIdentity(
        study_uid,
        study_date,
        study_time,
        accession,
        description="Mammography (wrapped from a research data set)",
    )
    if sop_class == "mg" and side is not None:
        if pixels.dtype != np.uint16:
            pixels = pixels.astype(np.uint16)
        ds = mg_for_presentation_dataset(
            pixels,
            slot=Slot(side, view_),
            patient=patient,
            study=study,
            series_uid=series_uid,
            sop_instance_uid=sop_uid,
            series_number=series_number,
            bits_stored=bits_stored,
            photometric=photometric,
            pixel_spacing_mm=pixel_spacing_mm,
            patient_orientation=tuple(patient_orientation) if patient_orientation else None,
            window=_window(pixels, bits_stored, photometric),
            manufacturer=_WRAP_MANUFACTURER,
            model_name="",
            extra={"SeriesDescription": description} if description else None,
        )
        ds.SoftwareVersions = f"mammo-node {__version__}"
        return ds
    return _secondary_capture(
        pixels,
        laterality=side,
        view=view_,
        patient=patient,
        study=study,
        series_uid=series_uid,
        sop_uid=sop_uid,
        series_number=series_number,
        bits_stored=bits_stored,
        photometric=photometric,
        pixel_spacing_mm=pixel_spacing_mm,
        patient_orientation=patient_orientation,
        description=description,
    )


def patient_orientation_for(laterality: Laterality, view: View, chest_wall_left: bool) -> list[str]:
    """Patient Orientation for an image whose chest wall is at column 0 (or the last column)."""
    return list(orientation_of(laterality, view, chest_wall_left=chest_wall_left))


def _window(pixels: np.ndarray, bits_stored: int, photometric: str) -> tuple[float, float]:
    """A window over the tissue values (1st to 99.8th percentile of non-background pixels)."""
    sample = pixels[::4, ::4].astype(np.float32)
    if photometric == "MONOCHROME1":
        sample = (2**bits_stored - 1) - sample
    tissue = sample[sample > 0.05 * float(sample.max(initial=1))]
    if tissue.size < 16:
        tissue = sample.ravel()
    low, high = (float(v) for v in np.percentile(tissue, [1.0, 99.8]))
    centre = (low + high) / 2.0
    if photometric == "MONOCHROME1":
        centre = (2**bits_stored - 1) - centre
    return round(centre, 1), round(max(high - low, 1.0), 1)


def _secondary_capture(
    pixels: np.ndarray,
    *,
    laterality: Laterality | None,
    view: View,
    patient: PatientIdentity,
    study: StudyIdentity,
    series_uid: str,
    sop_uid: str,
    series_number: int,
    bits_stored: int,
    photometric: str,
    pixel_spacing_mm: float,
    patient_orientation: Sequence[str] | None,
    description: str,
) -> Dataset:
    """Secondary Capture Image of a digitised film, as film archives hold mammograms."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    patient_study_series(ds, patient, study, series_uid, series_number, "MG")
    if description:
        ds.SeriesDescription = description
    if laterality is not None:
        ds.Laterality = laterality.value
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = view.value  # not in the SC IOD, but digitised-film archives carry it
    ds.Manufacturer = _WRAP_MANUFACTURER
    ds.ConversionType = "DF"
    ds.SecondaryCaptureDeviceManufacturer = _WRAP_MANUFACTURER
    ds.SecondaryCaptureDeviceSoftwareVersions = f"mammo-node {__version__}"
    ds.DateOfSecondaryCapture = study.date
    ds.InstanceNumber = 1
    ds.PatientOrientation = list(patient_orientation) if patient_orientation else ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"  # film markers and labels are part of the scanned film
    ds.NominalScannedPixelSpacing = [f"{pixel_spacing_mm:.6g}"] * 2
    ds.PixelSpacing = [f"{pixel_spacing_mm:.6g}"] * 2
    ds.AnatomicRegionSequence = DicomSequence([code_item("76752008", "SCT", "Breast")])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 8 * pixels.dtype.itemsize
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.ContentDate = study.date
    ds.ContentTime = study.time
    return with_file_meta(ds)


def write_datasets(datasets: Iterable[Dataset], out_dir: Path) -> list[Path]:
    """Write each dataset as ``out_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm``."""
    paths = []
    for ds in datasets:
        folder = Path(out_dir) / str(ds.StudyInstanceUID)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- NYU (GMIC)


def _nyu_root(src_dir: Path) -> Path:
    src_dir = Path(src_dir)
    for candidate in (src_dir, src_dir / NYU_DIR):
        if (candidate / "sample_data" / "images").is_dir():
            return candidate
    raise WrapError(
        f'Argument "src_dir" should hold sample_data/images/0_<view>.png; got {src_dir}.'
    )


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise WrapError(f"Image {path} does not exist.")
    with Image.open(path) as im:
        return np.array(im)


def wrap_nyu_exam(
    src_dir: Path, *, pixel_spacing_mm: float = NYU_ASSUMED_PIXEL_MM
) -> list[Dataset]:
    """The four original views as MG For Presentation, one study, one series per view.

    Pixels are copied exactly (12-bit values in 16-bit words, MONOCHROME2). In these PNGs
    left breasts have the chest wall at column 0 and right breasts at the last column; the
    Patient Orientation written is the one found from each image's pixels.
    """
    root = _nyu_root(src_dir)
    study_uid = make_uid("nyu-gmic-exam", 0)
    datasets = []
    for number, slot in enumerate(SLOTS, start=1):
        pixels = _read_png(root / "sample_data" / "images" / f"0_{slot}.png")
        if pixels.dtype != np.uint16:
            raise WrapError(f"NYU image 0_{slot}.png should be 16-bit; got {pixels.dtype}.")
        bits = max(12, int(pixels.max()).bit_length())
        datasets.append(
            wrap_image(
                pixels,
                laterality=slot.laterality,
                view=slot.view,
                sop_class="mg",
                patient_id="NYU-GMIC-0",
                study_uid=study_uid,
                bits_stored=bits,
                pixel_spacing_mm=pixel_spacing_mm,
                patient_name="NYU^GMIC SAMPLE 0",
                study_date="20100101",
                study_time="090000",
                accession="GMIC0",
                series_number=number,
                description=f"{slot.laterality.value} {slot.view.value}",
            )
        )
    return datasets


@dataclass(frozen=True)
class CropMapping:
    """How GMIC's cropped frame relates to a stored original: ``cropped[y, x] =
    round(oriented[y - dy, x - dx] * scale)``, where ``oriented`` is the original flipped
    left-right when ``flipped``."""

    dy: int
    dx: int
    flipped: bool
    width: int  # columns of the original
    scale: float

    def to_stored(self, x: float, y: float) -> tuple[float, float]:
        """A cropped-frame point (column, row) in the original's stored pixel grid."""
        ox, oy = x - self.dx, y - self.dy
        return ((self.width - 1 - ox) if self.flipped else ox), oy


def nyu_crop_mapping(src_dir: Path, slot: Slot) -> CropMapping:
    """Establish the crop offset from the pixels and prove it (every overlapping value agrees).

    Raises WrapError when no offset makes the cropped image a copy of the original.
    """
    root = _nyu_root(src_dir)
    original = _read_png(root / "sample_data" / "images" / f"0_{slot}.png").astype(np.int64)
    cropped = _read_png(root / "sample_data" / "cropped_images" / f"0_{slot}.png").astype(np.int64)
    flipped = slot.laterality is Laterality.R
    oriented = original[:, ::-1] if flipped else original
    scale = 65535.0 / 4095.0 if cropped.max() > 4095 else 1.0
    rows_o, cols_o = np.nonzero(oriented)
    rows_c, cols_c = np.nonzero(cropped)
    dy, dx = int(rows_c.min() - rows_o.min()), int(cols_c.min() - cols_o.min())
    h, w = oriented.shape
    y0, x0 = max(0, dy), max(0, dx)
    y1, x1 = min(cropped.shape[0], dy + h), min(cropped.shape[1], dx + w)
    if y1 <= y0 or x1 <= x0:
        raise WrapError(f"GMIC crop of {slot} does not overlap its original.")
    expected = np.rint(oriented[y0 - dy : y1 - dy, x0 - dx : x1 - dx] * scale)
    agree = float(np.mean(np.abs(cropped[y0:y1, x0:x1] - expected) <= 1))
    if agree < 0.999:
        raise WrapError(
            f"GMIC crop of {slot} is not a shifted copy of its original "
            f"(offset {dy}, {dx}: {agree:.1%} of pixels agree); the lesion boxes cannot be mapped."
        )
    return CropMapping(dy, dx, flipped, w, scale)


def nyu_lesion_truth(src_dir: Path, datasets: Sequence[Dataset]) -> list[LesionTruth]:
    """Benign lesions from the GMIC segmentation masks, in the stored grid of ``datasets``.

    Centre = mask centroid, radius = half the larger side of the mask's bounding box.
    """
    root = _nyu_root(src_dir)
    labels = json.loads((root / "labels.json").read_text())
    by_slot = {Slot(Laterality(d.ImageLaterality), View(d.ViewPosition)): d for d in datasets}
    truth = []
    for name, image in labels["images"].items():
        if "benign_mask" not in image:
            continue
        slot = Slot.parse(name)
        mask = _read_png(root / "sample_data" / image["benign_mask"]) > 0
        rows, cols = np.nonzero(mask)
        mapping = nyu_crop_mapping(root, slot)
        x, y = mapping.to_stored(float(cols.mean()), float(rows.mean()))
        radius = (max(cols.max() - cols.min(), rows.max() - rows.min()) + 1) / 2.0
        ds = by_slot[slot]
        truth.append(
            LesionTruth(
                ds.SOPInstanceUID,
                ds.StudyInstanceUID,
                ds.PatientID,
                str(slot),
                round(x, 2),
                round(y, 2),
                float(radius),
                "benign_lesion",
            )
        )
    return truth


# --------------------------------------------------------------------------- mini-MIAS


@dataclass(frozen=True)
class MiasRecord:
    """One line of Info.txt. x, y: lesion centre with the origin at the bottom-left corner."""

    name: str
    tissue: str
    abnormality: str
    severity: str = ""
    x: int | None = None
    y: int | None = None
    radius: int | None = None


def read_mias_info(src_dir: Path) -> dict[str, list[MiasRecord]]:
    """Info.txt as records per image name (an image with two lesions has two records)."""
    path = Path(src_dir) / "Info.txt"
    if not path.is_file():
        raise WrapError(f"MIAS annotation file {path} does not exist.")
    records: dict[str, list[MiasRecord]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].startswith("mdb"):
            continue
        coords = parts[4:7]
        if len(coords) == 3 and all(c.isdigit() for c in coords):
            x, y, r = (int(c) for c in coords)
            record = MiasRecord(parts[0], parts[1], parts[2], parts[3], x, y, r)
        else:  # normal, or calcifications spread widely (no centre given)
            record = MiasRecord(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        records.setdefault(parts[0], []).append(record)
    return records


def mias_to_stored(x: float, y: float, rows: int = 1024) -> tuple[float, float]:
    """Info.txt (origin bottom-left, y up) -> stored pixel grid (column, row; row 0 on top)."""
    return float(x), float(rows - 1) - float(y)


def wrap_mias(
    src_dir: Path, names: Sequence[str] | None = None
) -> list[tuple[Dataset, list[LesionTruth]]]:
    """MIAS films as Secondary Capture "digitised film" objects, with their lesion centres.

    One patient per pair of films (mdb001+mdb002 ...), one study per patient. Laterality
    follows the MIAS README (even number = left, odd = right), but that rule is unreliable:
    film markers on mdb002 and mdb024 contradict it.
    """
    src_dir = Path(src_dir)
    if not (src_dir / "Info.txt").is_file() and (src_dir / MIAS_DIR).is_dir():
        src_dir = src_dir / MIAS_DIR
    info = read_mias_info(src_dir)
    if names is None:
        names = sorted(p.stem for p in src_dir.glob("mdb*.pgm"))
    wrapped = []
    for name in names:
        pixels = _read_png(src_dir / f"{name}.pgm")
        number = int(name[3:])
        laterality = Laterality.L if number % 2 == 0 else Laterality.R  # unreliable, see above
        patient = f"MIAS-{(number + 1) // 2:03d}"
        ds = wrap_image(
            pixels,
            laterality=laterality,
            view=View.MLO,
            sop_class="sc",
            patient_id=patient,
            study_uid=make_uid("mias-study", patient),
            bits_stored=8,
            pixel_spacing_mm=MIAS_PIXEL_MM,
            patient_name=f"MIAS^{patient}",
            study_date="19940101",
            study_time="000000",
            accession=patient,
            series_number=1 + (number + 1) % 2,
            description=f"mini-MIAS {name}",
        )
        truth = []
        for record in info.get(name, []):
            if record.x is None or record.y is None or record.radius is None:
                continue
            x, y = mias_to_stored(record.x, record.y, pixels.shape[0])
            severity = "malignant" if record.severity == "M" else "benign"
            kind = f"{record.abnormality.lower()}_{severity}"
            truth.append(
                LesionTruth(
                    ds.SOPInstanceUID,
                    ds.StudyInstanceUID,
                    patient,
                    f"{laterality.value}-MLO",
                    x,
                    y,
                    float(record.radius),
                    kind,
                )
            )
        wrapped.append((ds, truth))
    return wrapped
