"""What the writers take from the source images and the inference, checked once up front.

A :class:`ScoredView` pairs one For Presentation source image with its model output after
checking that they belong together (same SOP instance, same view, a saliency map over that
image, ROI and COA inside the image). Every later step can then trust its inputs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes as pcodes
from pydicom.tag import Tag

from mammo_node.domain import SLOTS, BundleInfo, ExamInference, SaliencyMap, Slot, ViewInference
from mammo_node.errors import OutputError
from mammo_node.writers import codes
from mammo_node.writers.display import display_grey

_PIXEL_TAGS = {Tag("PixelData"), Tag("FloatPixelData"), Tag("DoubleFloatPixelData")}
# Type 2 attributes of the Patient and General Study modules that the outputs copy (highdicom
# reads them unconditionally). Real files omit some; an absent one is copied as empty.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class ScoredView:
    slot: Slot
    source: Dataset  # full dataset, pixels included
    header: Dataset  # the same without pixel data (for references and evidence)
    result: ViewInference
    _displayed: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def display(self, factor: int = 1) -> np.ndarray:
        """The source as a viewer shows it (:func:`~mammo_node.writers.display.display_grey`)
        reduced ``factor`` x by block mean: rendered once per view and exam, then shared by
        every writer that draws it."""
        if factor not in self._displayed:
            self._displayed[factor] = display_grey(self.source, factor)
        return self._displayed[factor]

    @property
    def rows(self) -> int:
        return int(self.source.Rows)

    @property
    def columns(self) -> int:
        return int(self.source.Columns)


def header_of(dataset: Dataset) -> Dataset:
    """A copy of ``dataset`` without its pixel data (elements shared, never mutated), with
    absent Type 2 patient/study attributes present and empty."""
    header = Dataset()
    for element in dataset:
        if element.tag not in _PIXEL_TAGS:
            header.add(element)
    for keyword in _TYPE2_COPIED:
        if keyword not in header:
            setattr(header, keyword, "")
    if hasattr(dataset, "file_meta"):
        header.file_meta = dataset.file_meta
    return header


def scored_views(sources: Mapping[Slot, Dataset], inference: ExamInference) -> list[ScoredView]:
    """Pair sources with view results, in L-CC, L-MLO, R-CC, R-MLO order."""
    if not inference.views:
        raise OutputError(f"Exam {inference.study_uid}: the inference has no scored view.")
    views: list[ScoredView] = []
    for slot in SLOTS:
        result = inference.views.get(slot)
        if result is None:
            continue
        source = sources.get(slot)
        if source is None:
            raise OutputError(
                f"Exam {inference.study_uid}: view {slot} was scored but no source image was "
                f"given for it (sources hold {', '.join(str(s) for s in sources) or 'nothing'})."
            )
        _check_view(slot, source, result, inference.study_uid)
        views.append(ScoredView(slot, source, header_of(source), result))
    return views


def _check_view(slot: Slot, source: Dataset, result: ViewInference, study_uid: str) -> None:
    where = f"Exam {study_uid} view {slot}"
    if source.get("StudyInstanceUID") != study_uid:
        raise OutputError(
            f"{where}: source StudyInstanceUID is {source.get('StudyInstanceUID')!r}, "
            f"expected {study_uid!r}."
        )
    if source.get("SOPInstanceUID") != result.sop_instance_uid:
        raise OutputError(
            f"{where}: source SOPInstanceUID {source.get('SOPInstanceUID')!r} is not the "
            f"scored image {result.sop_instance_uid!r}."
        )
    if result.slot != slot:
        raise OutputError(f"{where}: the view result says slot {result.slot}.")
    rows, cols = int(source.Rows), int(source.Columns)
    saliency = result.saliency
    if not isinstance(saliency, SaliencyMap) or saliency.stored_shape != (rows, cols):
        shape = getattr(saliency, "stored_shape", type(saliency).__name__)
        raise OutputError(
            f'{where}: "saliency" should be a SaliencyMap over the {cols}x{rows} image '
            f"(stored shape ({rows}, {cols})), got {shape}."
        )
    x0, y0, x1, y1 = result.roi
    if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
        raise OutputError(
            f'{where}: "roi" {result.roi} is not a non-empty box inside the '
            f"{cols}x{rows} image (x0, y0, x1, y1 with x1/y1 exclusive)."
        )
    cx, cy = result.coa
    if not (math.isfinite(cx) and math.isfinite(cy) and 0 <= cx <= cols and 0 <= cy <= rows):
        raise OutputError(f'{where}: "coa" {result.coa} lies outside the {cols}x{rows} image.')
    for name in ("holistic", "attention", "ensemble"):
        value = getattr(result, name)
        if not math.isfinite(value):
            raise OutputError(f'{where}: score "{name}" is {value!r}.')


def pixel_spacing(dataset: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: ImagerPixelSpacing, else PixelSpacing, else None."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = dataset.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    return None


def patient_orientation(dataset: Dataset) -> tuple[str, str] | None:
    value = dataset.get("PatientOrientation")
    if value is not None and len(value) == 2 and all(value):
        return str(value[0]), str(value[1])
    return None


def contributing_equipment(
    bundle: BundleInfo, *, institution_name: str | None, station_name: str | None
) -> hd.ContributingEquipment:
    """Processing Equipment: this node running the model bundle."""
    description = f"Scored by model bundle {bundle.name} {bundle.version}"
    if bundle.is_demo:
        description += f" ({codes.DEMO_NOTICE})"
    return hd.ContributingEquipment(
        manufacturer=codes.MANUFACTURER,
        purpose_of_reference=hd.sr.CodedConcept(*pcodes.DCM.ProcessingEquipment),
        manufacturer_model_name=bundle.name[:64],
        software_versions=bundle.version[:64],
        institution_name=institution_name,
        station_name=station_name,
        contribution_description=description,
    )


def algorithm_parameters(bundle: BundleInfo) -> list[str]:
    params = [f"architecture={bundle.architecture}", f"score_kind={bundle.score_kind}"]
    if bundle.manifest_sha256:
        params.append(f"manifest_sha256={bundle.manifest_sha256}")
    params.append(f"is_demo={str(bundle.is_demo).lower()}")
    return params


# Patient, Patient Study and General Study module attributes every output copies from its
# source (present ones only), so an issuer-matching PACS files each output under the source's
# patient and study. highdicom copies some of them per IOD, the SC fewest.
IDENTITY_KEYWORDS = (
    # Patient module
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "ReferencedPatientSequence",
    # Patient Study module
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "AdmittingDiagnosesDescription",
    # General Study module
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "ProcedureCodeSequence",
    "ReferencedStudySequence",
)


def copy_identity(target: Dataset, source: Dataset, *, is_sr: bool) -> None:
    """Copy the patient / study identity and the request attributes of ``source``.

    Images and presentation states carry the order in RequestAttributesSequence (General
    Series); SR documents in ReferencedRequestSequence (SR Document General), built from the
    source's request attributes and accession number.
    """
    for keyword in ("SpecificCharacterSet", *IDENTITY_KEYWORDS):
        if keyword in source:
            target[keyword] = copy.deepcopy(source[keyword])
    requests = list(source.get("RequestAttributesSequence", []))
    if not is_sr:
        if requests:
            target.RequestAttributesSequence = copy.deepcopy(requests)
        return
    if not requests and not source.get("AccessionNumber"):
        return
    items = []
    for request in requests or [Dataset()]:
        item = Dataset()
        item.StudyInstanceUID = source.StudyInstanceUID
        item.ReferencedStudySequence = []  # Type 2
        item.AccessionNumber = request.get("AccessionNumber", source.get("AccessionNumber", ""))
        if "IssuerOfAccessionNumberSequence" in source:
            item.IssuerOfAccessionNumberSequence = copy.deepcopy(
                source.IssuerOfAccessionNumberSequence
            )
        item.PlacerOrderNumberImagingServiceRequest = request.get(
            "PlacerOrderNumberImagingServiceRequest", ""
        )
        item.FillerOrderNumberImagingServiceRequest = request.get(
            "FillerOrderNumberImagingServiceRequest", ""
        )
        item.RequestedProcedureID = request.get("RequestedProcedureID", "")
        item.RequestedProcedureDescription = request.get("RequestedProcedureDescription", "")
        item.RequestedProcedureCodeSequence = copy.deepcopy(
            list(request.get("RequestedProcedureCodeSequence", []))
        )
        items.append(item)
    target.ReferencedRequestSequence = items
