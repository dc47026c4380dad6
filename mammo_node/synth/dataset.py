"""The MG For Presentation dataset (patient, study, series, view, pixel modules) around pixels."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from mammo_node import __version__
from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.synth.options import PatientIdentity, StudyIdentity, SynthError

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MANUFACTURER = "mammo-node synth"


def patient_orientation(
    laterality: Laterality, view: View, *, chest_wall_left: bool
) -> tuple[str, str]:
    """Patient Orientation (0020,0020) of a CC or MLO image: (row direction, column direction).

    The row direction points from the first to the last column: anterior (A) when the chest
    wall is at column 0, posterior (P) when it is at the last column. The column direction
    follows the usual convention (lateral side up on CC, axilla up on MLO): going down is
    medial on CC and foot + medial on MLO; the medial side of the left breast is the patient's
    right (R). Mirroring an image left-right flips only the row direction.
    """
    medial = "R" if laterality is Laterality.L else "L"
    return ("A" if chest_wall_left else "P", medial if view is View.CC else "F" + medial)


# As a detector stores them: left breasts with the chest wall at column 0, right breasts
# mirrored with the chest wall at the last column (L-CC A\R, L-MLO A\FR, R-CC P\L, R-MLO P\FL).
PATIENT_ORIENTATION: dict[Slot, tuple[str, str]] = {
    slot: patient_orientation(
        slot.laterality, slot.view, chest_wall_left=slot.laterality is Laterality.L
    )
    for slot in SLOTS
}
VIEW_CODES: dict[View, tuple[str, str]] = {
    View.CC: ("399162004", "cranio-caudal"),
    View.MLO: ("399368009", "medio-lateral oblique"),
}


def _view_code(view: View) -> tuple[str, str, str]:
    value, meaning = VIEW_CODES[view]
    return value, "SCT", meaning


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def mg_for_presentation_dataset(
    pixels: np.ndarray,
    *,
    slot: Slot,
    patient: PatientIdentity,
    study: StudyIdentity,
    series_uid: str,
    sop_instance_uid: str,
    series_number: int,
    bits_stored: int,
    photometric: str,
    pixel_spacing_mm: float,
    patient_orientation: tuple[str, str] | None = None,
    window: tuple[float, float] | None = None,
    manufacturer: str = MANUFACTURER,
    model_name: str = "Synthetic FFDM",
    extra: Mapping[str, object] | None = None,
) -> Dataset:
    """A Digital Mammography X-Ray Image - For Presentation dataset with file meta.

    ``pixels`` is uint16 (Rows, Columns) as stored; nothing is flipped here. The default
    PatientOrientation assumes the chest wall of a left breast at column 0 and of a right
    breast at the last column. ``extra`` adds keyword -> value pairs (KVP, Exposure,
    DetectorType...) and may override any attribute set here.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint16:
        raise SynthError(
            f'Argument "pixels" should be a 2-D uint16 array; got {pixels.dtype} {pixels.shape}.'
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SynthError(f'Argument "photometric" should be MONOCHROME1/2; got "{photometric}".')
    if int(pixels.max(initial=0)) >= 2**bits_stored:
        raise SynthError(
            f'Argument "pixels" has values above {2**bits_stored - 1} for bits_stored '
            f"{bits_stored}."
        )
    ds = Dataset()
    patient_study_series(ds, patient, study, series_uid, series_number, "MG")
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_instance_uid
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model_name
    ds.SoftwareVersions = f"mammo-node {__version__}"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.InstanceNumber = 1
    ds.PatientOrientation = list(patient_orientation or PATIENT_ORIENTATION[slot])
    ds.ContentDate = study.date
    ds.ContentTime = study.time
    ds.AcquisitionDate = study.date
    ds.AcquisitionTime = study.time
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    ds.ImageLaterality = slot.laterality.value
    ds.BodyPartExamined = "BREAST"
    ds.AnatomicRegionSequence = DicomSequence([code_item("76752008", "SCT", "Breast")])
    ds.ViewPosition = slot.view.value
    view_item = code_item(*_view_code(slot.view))
    view_item.ViewModifierCodeSequence = DicomSequence([])
    ds.ViewCodeSequence = DicomSequence([view_item])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.DetectorType = ""  # type 2: unknown unless ``extra`` says
    ds.ImagerPixelSpacing = [f"{pixel_spacing_mm:.6g}"] * 2
    ds.PixelSpacing = [f"{pixel_spacing_mm:.6g}"] * 2
    ds.AcquisitionContextSequence = DicomSequence([])
    _pixel_module(ds, pixels, bits_stored=bits_stored, photometric=photometric)
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    if window is None:
        top = 2**bits_stored - 1
        window = (top / 2.0, float(top))
    ds.WindowCenter = f"{window[0]:.1f}"
    ds.WindowWidth = f"{window[1]:.1f}"
    ds.WindowCenterWidthExplanation = "NORMAL"
    ds.VOILUTFunction = "LINEAR"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    return with_file_meta(ds)


def patient_study_series(
    ds: Dataset,
    patient: PatientIdentity,
    study: StudyIdentity,
    series_uid: str,
    series_number: int,
    modality: str,
) -> None:
    """Patient, General Study and General Series attributes (shared with mammo_node.synth.wrap)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F"
    if patient.birth_date and study.date:
        born = dt.datetime.strptime(patient.birth_date, "%Y%m%d").date()
        seen = dt.datetime.strptime(study.date, "%Y%m%d").date()
        years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
        ds.PatientAge = f"{years:03d}Y"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = study.date
    ds.SeriesTime = study.time


def _pixel_module(ds: Dataset, pixels: np.ndarray, *, bits_stored: int, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


def with_file_meta(ds: Dataset) -> Dataset:
    """Add Part-10 file meta (explicit VR little endian) to ``ds`` and return it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MAMMO_NODE_{__version__}"[:16]
    ds.file_meta = meta
    ds.InstanceCreationDate = ds.get("ContentDate", "")
    ds.InstanceCreationTime = ds.get("ContentTime", "")
    return ds


def _acquisition(rng: np.random.Generator, slot: Slot, thickness_mm: float) -> dict[str, object]:
    """Equipment, exposure and positioner values a real FFDM header carries (plausible values,
    not a physical model)."""
    sid = 660.0
    to_patient = round(sid - thickness_mm - 20.0)
    kvp = round(25.0 + 0.12 * thickness_mm + rng.uniform(-1, 1))
    mas = round(float(rng.uniform(0.9, 1.3) * (40 + 2.2 * thickness_mm)), 1)
    current = float(rng.choice([100.0, 120.0, 160.0]))
    angle = 0.0 if slot.view is View.CC else (45.0 if slot.laterality is Laterality.R else -45.0)
    return {
        "InstitutionName": "Synthetic Screening Unit",
        "StationName": "SYNTH1",
        "DeviceSerialNumber": "0001",
        "DetectorType": "DIRECT",
        "DetectorConfiguration": "AREA",
        "KVP": f"{kvp:.0f}",
        "Exposure": round(mas),
        "ExposureInuAs": round(mas * 1000),
        "XRayTubeCurrent": round(current),
        "ExposureTime": round(mas / current * 1000),
        "BodyPartThickness": f"{thickness_mm:.0f}",
        "CompressionForce": f"{rng.uniform(60, 140):.0f}",
        "PositionerPrimaryAngle": f"{angle:.1f}",
        "DistanceSourceToDetector": f"{sid:.0f}",
        "DistanceSourceToPatient": f"{to_patient}",
        "EstimatedRadiographicMagnificationFactor": f"{sid / to_patient:.4f}",
        "AnodeTargetMaterial": "TUNGSTEN",
        "FilterMaterial": "RHODIUM",
        "FilterThicknessMinimum": "0.05",
        "FilterThicknessMaximum": "0.05",
        "Grid": "RECIPROCATING",
        "FocalSpots": "0.3",
        "RelativeXRayExposure": int(rng.integers(300, 900)),
        "OrganDose": f"{rng.uniform(0.8, 2.2):.2f}",
        "EntranceDoseInmGy": f"{rng.uniform(3.0, 9.0):.2f}",
    }
