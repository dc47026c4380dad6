"""Small helpers for the model-core and trainer tests: tiny MG datasets made with pydicom."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography For Presentation


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


def make_mg(
    display: np.ndarray,
    *,
    laterality: str | None = "L",
    view: str | None = "CC",
    patient_orientation: Sequence[str] | None = None,
    photometric: str = "MONOCHROME2",
    study_uid: str | None = None,
    patient_id: str = "P1",
    bits: int = 12,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
) -> Dataset:
    """A For Presentation MG dataset whose displayed image is ``display`` (0..1, bright=dense).

    MONOCHROME1 stores the inverted values, so the display is the same either way.
    """
    top = (1 << bits) - 1
    values = display if photometric == "MONOCHROME2" else 1.0 - display
    stored = np.round(np.clip(values, 0, 1) * top).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MG_SOP_CLASS
    ds.SOPClassUID = MG_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if patient_orientation is not None:
        ds.PatientOrientation = list(patient_orientation)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    ds.PixelData = stored.tobytes()
    return ds
