"""Habits of real screening-site traffic, applied to a clean synthetic (or any) exam.

A modality or PACS rarely sends four clean views: it sends a technical repeat, synthesized 2D
beside the FFDM, its dose report, presentation states, a key object note, another vendor's CAD
SR, an IOCM rejection note that withdraws an image, priors prefetched by the PACS, a woman
registered without a PatientID, and pixels in whatever transfer syntax it was set up with.
Each function here makes one such object from the exam's own datasets (so UIDs, patient and
study attributes agree the way they do in real traffic); ``add_habits`` applies a set of them
by name, which is what ``mammo-node synth --habit`` calls.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from mammo_node.errors import MammoNodeError
from mammo_node.sop_classes import (
    ENCAPSULATED_PDF,
    GRAYSCALE_SOFTCOPY_PRESENTATION_STATE,
    KEY_OBJECT_SELECTION,
    MAMMOGRAPHY_CAD_SR,
    XRAY_RADIATION_DOSE_SR,
)

#: Habit names ``add_habits`` and ``mammo-node synth --habit`` know.
HABITS = (
    "repeat",
    "companions",
    "synthetic-2d",
    "rejection",
    "prior-merged",
    "empty-patient-id",
    "rle",
    "j2k",
)


class HabitError(MammoNodeError):
    """A habit was asked for that does not exist, or cannot apply to the exam given."""


def _uid(*parts: object) -> str:
    """A UID that depends only on ``parts`` (the generator is deterministic per seed)."""
    return str(generate_uid(prefix=None, entropy_srcs=["habit", *map(str, parts)]))


def _copy_with_new_uid(ds: Dataset, habit: str, *, new_series: bool = False) -> Dataset:
    out = copy.deepcopy(ds)  # Dataset.copy() shares the elements with the original
    out.SOPInstanceUID = _uid(habit, ds.SOPInstanceUID)
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    if new_series:
        out.SeriesInstanceUID = _uid(habit, "series", ds.SeriesInstanceUID)
    return out


def _acquired(ds: Dataset) -> dt.datetime:
    stamp = str(ds.get("AcquisitionDateTime", "")) or (
        str(ds.get("AcquisitionDate", "")) + str(ds.get("AcquisitionTime", "")).split(".")[0]
    )
    stamp = (stamp or str(ds.get("StudyDate", "20260101"))).ljust(14, "0")[:14]
    return dt.datetime.strptime(stamp, "%Y%m%d%H%M%S")


def _set_acquired(ds: Dataset, when: dt.datetime) -> None:
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDate = when.strftime("%Y%m%d")
    ds.AcquisitionTime = when.strftime("%H%M%S")
    ds.ContentDate = ds.AcquisitionDate
    ds.ContentTime = ds.AcquisitionTime


def technical_repeat(ds: Dataset, *, later_by: dt.timedelta = dt.timedelta(minutes=2)) -> Dataset:
    """A second exposure of the same view (the first was blurred): same series, a later
    AcquisitionDateTime, a higher InstanceNumber, slightly different pixels."""
    first = _acquired(ds)
    _set_acquired(ds, first)  # the original says when it was taken, as modalities do
    repeat = _copy_with_new_uid(ds, f"repeat-{later_by.total_seconds()}")
    _set_acquired(repeat, first + later_by)
    repeat.InstanceNumber = int(ds.get("InstanceNumber", 1) or 1) + 1
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16 if ds.BitsAllocated == 16 else np.uint8)
    repeat.PixelData = np.roll(pixels, 3).tobytes()
    return repeat


def synthesized_2d(ds: Dataset) -> Dataset:
    """Synthesized 2D made from a tomosynthesis sweep of the same view (Hologic's C-View
    habit: its own series, ImageType GENERATED_2D, series text naming it)."""
    synth = _copy_with_new_uid(ds, "synthesized-2d", new_series=True)
    synth.ImageType = ["DERIVED", "PRIMARY", "GENERATED_2D"]
    synth.SeriesDescription = f"C-View {ds.get('ImageLaterality', '')}{ds.get('ViewPosition', '')}"
    synth.SeriesNumber = int(ds.get("SeriesNumber", 1) or 1) + 100
    return synth


def _study_header(ds: Dataset, sop_class: str, modality: str, *salt: object) -> Dataset:
    """A new object of the study: the image's patient and study modules, its own series."""
    out = Dataset()
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta.MediaStorageSOPClassUID = sop_class
    out.SOPClassUID = sop_class
    out.SOPInstanceUID = _uid(sop_class, ds.SOPInstanceUID, *salt)
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
        "Manufacturer",
    ):
        if keyword in ds:
            setattr(out, keyword, ds.get(keyword))
    out.Modality = modality
    out.SeriesInstanceUID = _uid(sop_class, "series", ds.StudyInstanceUID, *salt)
    out.SeriesNumber = 900
    out.InstanceNumber = 1
    out.ContentDate = ds.get("StudyDate", "")
    out.ContentTime = ds.get("StudyTime", "")
    return out


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _evidence(images: Sequence[Dataset]) -> DicomSequence:
    """CurrentRequestedProcedureEvidenceSequence listing ``images`` by study and series."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for image in images:
        series = studies.setdefault(str(image.StudyInstanceUID), {})
        series.setdefault(str(image.SeriesInstanceUID), []).append(image)
    out = []
    for study_uid, series_map in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = DicomSequence()
        for series_uid, members in series_map.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            series.ReferencedSOPSequence = DicomSequence()
            for member in members:
                ref = Dataset()
                ref.ReferencedSOPClassUID = member.SOPClassUID
                ref.ReferencedSOPInstanceUID = member.SOPInstanceUID
                series.ReferencedSOPSequence.append(ref)
            study.ReferencedSeriesSequence.append(series)
        out.append(study)
    return DicomSequence(out)


def _sr(ds: Dataset, sop_class: str, title: Dataset, template: str, *salt: object) -> Dataset:
    modality = "SR" if sop_class != KEY_OBJECT_SELECTION else "KO"
    sr = _study_header(ds, sop_class, modality, title.CodeValue, *salt)
    sr.ValueType = "CONTAINER"
    sr.ConceptNameCodeSequence = DicomSequence([title])
    sr.ContinuityOfContent = "SEPARATE"
    tid = Dataset()
    tid.MappingResource = "DCMR"
    tid.TemplateIdentifier = template
    sr.ContentTemplateSequence = DicomSequence([tid])
    sr.CompletionFlag = "COMPLETE"
    sr.VerificationFlag = "UNVERIFIED"
    sr.ContentSequence = DicomSequence()
    return sr


def rejection_note(
    images: Sequence[Dataset], code: str = "113001", meaning: str = "Rejected for Quality Reasons"
) -> Dataset:
    """An IHE IOCM rejection note (KOS) withdrawing ``images`` (TID 2010 title 113001...)."""
    if not images:
        raise HabitError('Argument "images" is empty: a rejection note withdraws images.')
    listed = [str(image.SOPInstanceUID) for image in images]
    kos = _sr(images[0], KEY_OBJECT_SELECTION, _code(code, "DCM", meaning), "2010", *listed)
    kos.CurrentRequestedProcedureEvidenceSequence = _evidence(images)
    for image in images:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        item.ReferencedSOPSequence = DicomSequence([ref])
        kos.ContentSequence.append(item)
    return kos


def key_object_note(images: Sequence[Dataset]) -> Dataset:
    """A plain key object selection ("Of Interest"): a companion, withdraws nothing."""
    kos = rejection_note(images, "113000", "Of Interest")
    return kos


def dose_report(ds: Dataset) -> Dataset:
    """The modality's X-Ray Radiation Dose SR (TID 10001 title; content kept minimal)."""
    return _sr(
        ds, XRAY_RADIATION_DOSE_SR, _code("113701", "DCM", "X-Ray Radiation Dose Report"), "10001"
    )


def cad_report(images: Sequence[Dataset]) -> Dataset:
    """Another vendor's Mammography CAD SR (TID 4000) over the exam's images."""
    sr = _sr(
        images[0], MAMMOGRAPHY_CAD_SR, _code("111036", "DCM", "Mammography CAD Report"), "4000"
    )
    sr.CurrentRequestedProcedureEvidenceSequence = _evidence(images)
    sr.Manufacturer = "Other CAD Vendor"
    return sr


def presentation_state(image: Dataset) -> Dataset:
    """A Grayscale Softcopy Presentation State referencing one image (window, annotation)."""
    ps = _study_header(image, GRAYSCALE_SOFTCOPY_PRESENTATION_STATE, "PR")
    ps.ContentLabel = "WINDOW"
    ps.ContentDescription = "window set at the acquisition workstation"
    ps.PresentationCreationDate = ps.ContentDate
    ps.PresentationCreationTime = ps.ContentTime
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    series.ReferencedImageSequence = DicomSequence([ref])
    ps.ReferencedSeriesSequence = DicomSequence([series])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 2048, 4096
    ps.SoftcopyVOILUTSequence = DicomSequence([voi])
    ps.PresentationLUTShape = "IDENTITY"
    return ps


def encapsulated_pdf(ds: Dataset) -> Dataset:
    """A scanned request form as Encapsulated PDF (a minimal, valid PDF)."""
    pdf = _study_header(ds, ENCAPSULATED_PDF, "DOC")
    body = b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Count 0/Kids[]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"  # noqa: E501
    pdf.EncapsulatedDocument = body + (b"\0" if len(body) % 2 else b"")
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.DocumentTitle = "Screening request"
    pdf.BurnedInAnnotation = "YES"
    pdf.ConceptNameCodeSequence = DicomSequence()
    return pdf


def companions(images: Sequence[Dataset]) -> list[Dataset]:
    """What a modality and a CAD box send beside the images."""
    return [
        dose_report(images[0]),
        presentation_state(images[0]),
        key_object_note(images[:1]),
        cad_report(images),
        encapsulated_pdf(images[0]),
    ]


def merged_prior(images: Sequence[Dataset], *, years_before: int = 2) -> list[Dataset]:
    """A prior exam merged into the study (same StudyInstanceUID, earlier acquisition)."""
    out = []
    for image in images:
        prior = _copy_with_new_uid(image, f"prior-{years_before}", new_series=True)
        when = _acquired(image) - dt.timedelta(days=365 * years_before)
        _set_acquired(prior, when)
        prior.SeriesDescription = f"prior {when:%Y}"
        out.append(prior)
    return out


def as_prior_study(images: Sequence[Dataset], *, days_before: int = 400) -> list[Dataset]:
    """A prior *study* a PACS prefetch sends: its own StudyInstanceUID, an old StudyDate."""
    study_uid = _uid("prior-study", days_before, images[0].StudyInstanceUID)
    out = []
    for image in images:
        prior = _copy_with_new_uid(image, f"prior-study-{days_before}", new_series=True)
        when = dt.datetime.now() - dt.timedelta(days=days_before)
        prior.StudyInstanceUID = study_uid
        prior.StudyDate = when.strftime("%Y%m%d")
        _set_acquired(prior, when)
        out.append(prior)
    return out


def without_patient_id(images: Iterable[Dataset], name: str, birth_date: str) -> None:
    """A woman registered without an ID (emergency registration): empty PatientID."""
    for image in images:
        image.PatientID = ""
        image.PatientName = name
        image.PatientBirthDate = birth_date


def recent(images: Iterable[Dataset], when: dt.datetime | None = None) -> None:
    """Date the exam today (the screening round happening now), so it is not a prior."""
    when = when or dt.datetime.now()
    for image in images:
        image.StudyDate = when.strftime("%Y%m%d")
        image.StudyTime = when.strftime("%H%M%S")
        if "AcquisitionDate" in image or "AcquisitionDateTime" in image:
            _set_acquired(image, when.replace(microsecond=0))


def with_syntax(image: Dataset, syntax: UID) -> None:
    """Re-encode the pixels in ``syntax`` (RLE Lossless, JPEG 2000 Lossless...)."""
    if syntax == RLELossless:
        image.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    elif syntax == JPEG2000Lossless:
        image.compress(JPEG2000Lossless, generate_instance_uid=False)
    else:
        raise HabitError(f'Argument "syntax" should be RLE or JPEG 2000 Lossless, got {syntax}.')


def _by_view(images: Sequence[Dataset], laterality: str, view: str) -> Dataset:
    for image in images:
        if image.get("ImageLaterality") == laterality and image.get("ViewPosition") == view:
            return image
    return images[0]


def add_habits(images: list[Dataset], habits: Iterable[str], **_: Any) -> list[Dataset]:
    """The exam's datasets with the named habits applied: returns every object to send."""
    chosen = list(habits)
    unknown = sorted(set(chosen) - set(HABITS))
    if unknown:
        raise HabitError(f"unknown habit(s) {', '.join(unknown)}; known: {', '.join(HABITS)}")
    out = list(images)
    if "empty-patient-id" in chosen:
        without_patient_id(out, str(images[0].PatientName), str(images[0].PatientBirthDate))
    if "repeat" in chosen:
        out.append(technical_repeat(_by_view(images, "L", "CC")))
    if "synthetic-2d" in chosen:
        out.extend(synthesized_2d(image) for image in images)
    if "rejection" in chosen:
        extra = technical_repeat(_by_view(images, "R", "MLO"))
        out.append(extra)  # the later exposure was a mistake: withdrawn by a rejection note
        out.append(rejection_note([extra]))
    if "prior-merged" in chosen:
        out.extend(merged_prior(images))
    if "companions" in chosen:
        out.extend(companions(images))
    for name, syntax in (("rle", RLELossless), ("j2k", JPEG2000Lossless)):
        if name in chosen:
            for image in out:
                if "PixelData" in image and image.file_meta.TransferSyntaxUID == (
                    ExplicitVRLittleEndian
                ):
                    with_syntax(image, syntax)
    return out


__all__ = [
    "HABITS",
    "HabitError",
    "add_habits",
    "as_prior_study",
    "cad_report",
    "companions",
    "dose_report",
    "encapsulated_pdf",
    "key_object_note",
    "merged_prior",
    "presentation_state",
    "recent",
    "rejection_note",
    "synthesized_2d",
    "technical_repeat",
    "with_syntax",
    "without_patient_id",
]
