"""The one hand-made MG dataset builder, for tests that need a precise tag layout (bad input,
tag order, a planted spot) rather than a realistic exam (those come from mammo_node.synth).

``mg_dataset`` makes a For Presentation MG image with the tags the node reads; its pixels are
seeded noise, given stored values (``pixels``) or a display image (``display``, 0..1, bright =
dense, stored inverted for MONOCHROME1). Any other tag is a keyword argument (None deletes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammo_node.sop_classes import MG_PRESENTATION

VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}


def stored_from_display(display: np.ndarray, *, bits: int, photometric: str) -> np.ndarray:
    """Stored values whose displayed image is ``display`` (0..1, bright = dense)."""
    top = (1 << bits) - 1
    values = display if photometric == "MONOCHROME2" else 1.0 - display
    return np.round(np.clip(values, 0, 1) * top).astype(np.uint16)


def mg_dataset(
    laterality: str | None = "L",
    view: str | None = "CC",
    *,
    pixels: np.ndarray | None = None,
    display: np.ndarray | None = None,
    rows: int = 64,
    columns: int = 48,
    seed: int = 0,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "PAT-1",
    sop_class: str = MG_PRESENTATION,
    **tags: Any,
) -> Dataset:
    """An MG image; without ``pixels`` or ``display``, ``rows`` x ``columns`` seeded noise."""
    if display is not None:
        pixels = stored_from_display(display, bits=bits, photometric=photometric)
    if pixels is None:
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 1 << bits, (rows, columns), dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyDate = "20260101"
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
        if view in VIEW_CODES:
            item = Dataset()
            item.CodeValue, item.CodeMeaning = VIEW_CODES[view]
            item.CodingSchemeDesignator = "SCT"
            ds.ViewCodeSequence = [item]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def four_view_exam(study_uid: str | None = None, **kwargs: Any) -> list[Dataset]:
    study_uid = study_uid or generate_uid()
    return [
        mg_dataset(lat, view, study_uid=study_uid, seed=i, **kwargs)
        for i, (lat, view) in enumerate([("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")])
    ]


def write(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --- display images for the model-core and trainer tests ------------------------------------
def breast_phantom(rows: int, cols: int, *, seed: int = 0) -> np.ndarray:
    """A half-ellipse of tissue against the LEFT edge (chest wall left), values 0..1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = ((xx / (0.8 * cols)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2) <= 1.0
    image = np.where(inside, 0.45 + 0.05 * rng.standard_normal((rows, cols)), 0.0)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def plant_spot(image: np.ndarray, x: float, y: float, radius: float, value: float = 1.0) -> None:
    """Set a disk of ``radius`` centred at continuous (x, y) to ``value`` (in place)."""
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    image[((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2) <= radius**2] = value
