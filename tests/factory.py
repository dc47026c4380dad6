"""Small hand-made datasets for tests that need a precise tag layout (bad input, tag order).

Realistic exams come from mammo_node.synth; these are deliberately minimal and explicit.
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


def mg_dataset(
    laterality: str | None = "L",
    view: str | None = "CC",
    *,
    study_uid: str | None = None,
    patient_id: str = "PAT-1",
    rows: int = 64,
    columns: int = 48,
    sop_class: str = MG_PRESENTATION,
    seed: int = 0,
    **tags: Any,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
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
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(seed).integers(0, 4096, (rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
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
