"""The SR document around a content tree: the modules every report written here shares.

highdicom builds the content (TID 1500 / TID 4000 templates, coded concepts); this module
writes the document modules around it, for any SR SOP class (Comprehensive SR, Mammography
CAD SR): SOP Common, SR Document Series, General Equipment, SR Document General (flags,
Current Requested Procedure Evidence, Predecessor Documents, Pertinent Other Evidence) and
SR Document Content (the root container's attributes).

Why not highdicom's document constructors. ``highdicom.sr.ComprehensiveSR`` deep-copies the
content tree, parses it back into its own content-item classes and walks it twice more
(evidence, SCOORD3D); for the six reports of one exam that was about 0.4 s of the 0.5 s the
documents took (timed alone, in process), and the CAD SR needed its by-reference items added
after the parse, which highdicom does not know. The attributes written here are those
highdicom writes (``tests/test_writers.py`` compares the two on the same content); patient and
study identity is copied by :func:`mammo_node.writers.sources.copy_identity`, as for every
output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import highdicom as hd
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

import mammo_node
from mammo_node.errors import OutputError
from mammo_node.writers import codes
from mammo_node.writers.identity import OutputIdentity, ReferencedDocument
from mammo_node.writers.sources import ScoredView, contributing_equipment

if TYPE_CHECKING:
    from mammo_node.writers.sr import ReportContext

# SR Document Content: the root container's attributes, copied into the document
_ROOT_KEYWORDS = (
    "ValueType",
    "ConceptNameCodeSequence",
    "ContinuityOfContent",
    "ContentTemplateSequence",
    "ContentSequence",
)
# value types whose items reference a SOP instance (they must be in the evidence)
_REFERENCING_VALUE_TYPES = frozenset({"IMAGE", "COMPOSITE", "WAVEFORM"})


def sr_document(
    content: Dataset,
    *,
    sop_class_uid: str,
    views: Sequence[ScoredView],
    identity: OutputIdentity,
    ctx: ReportContext,
    predecessors: Sequence[ReferencedDocument] = (),
    siblings: Sequence[OutputIdentity] = (),
    local_codes: bool = False,
) -> hd.SOPClass:
    """The SR document of ``content`` (a root CONTAINER item, as highdicom's templates make)
    on the images of ``views``: unverified, complete, not final (a CAD result for a reader).

    ``predecessors`` go to Predecessor Documents, ``siblings`` (the other outputs of the same
    result) to Pertinent Other Evidence; ``local_codes``: the content uses this node's coding
    scheme (``codes.LOCAL_SCHEME_ITEM``, declared in Coding Scheme Identification). Raises
    :class:`OutputError` when the content references an instance that is not one of the views'
    images.
    """
    if not views:
        raise OutputError("An SR document needs at least one source image.")
    if content.get("ValueType") != "CONTAINER":
        raise OutputError("An SR document's content must be a root CONTAINER item.")
    first = views[0].header
    bundle = ctx.inference.bundle
    document = hd.SOPClass(
        study_instance_uid=first.StudyInstanceUID,
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        sop_class_uid=sop_class_uid,
        instance_number=identity.instance_number,
        modality="SR",
        manufacturer=codes.MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=first.get("PatientID"),
        patient_name=first.get("PatientName"),
        patient_birth_date=first.get("PatientBirthDate"),
        patient_sex=first.get("PatientSex"),
        accession_number=first.get("AccessionNumber"),
        study_id=first.get("StudyID"),
        study_date=first.get("StudyDate"),
        study_time=first.get("StudyTime"),
        referring_physician_name=first.get("ReferringPhysicianName"),
        specific_character_set=first.get("SpecificCharacterSet"),
        coding_schemes=[codes.LOCAL_SCHEME_ITEM] if local_codes else None,
        series_description=identity.series_description,
        manufacturer_model_name=codes.MANUFACTURER,
        software_versions=mammo_node.__version__,
        institution_name=ctx.institution_name,
        content_date=ctx.now.date(),
        content_time=ctx.now.time(),
        series_date=ctx.now.date(),
        series_time=ctx.now.time(),
    )
    if ctx.station_name:
        document.StationName = ctx.station_name
    document.CompletionFlag = "COMPLETE"
    document.VerificationFlag = "UNVERIFIED"
    document.PreliminaryFlag = "PRELIMINARY"
    for keyword in _ROOT_KEYWORDS:
        if keyword in content:
            document[keyword] = content[keyword]

    images = {v.header.SOPInstanceUID: v.header for v in views}
    missing = sorted(set(referenced_instances(content)) - set(images))
    if missing:
        raise OutputError(
            f"The report references {len(missing)} instance(s) that are not its source "
            f"images: {', '.join(missing)}"
        )
    document.CurrentRequestedProcedureEvidenceSequence = hierarchical_references(
        (str(h.StudyInstanceUID), str(h.SeriesInstanceUID), str(h.SOPClassUID), uid)
        for uid, h in images.items()
    )
    if predecessors:
        document.PredecessorDocumentsSequence = hierarchical_references(
            (d.study_instance_uid, d.series_instance_uid, d.sop_class_uid, d.sop_instance_uid)
            for d in predecessors
        )
    document.PerformedProcedureCodeSequence = []  # Type 2
    document.ReferencedPerformedProcedureStepSequence = []  # Type 2
    document.ContributingEquipmentSequence = [
        *_acquisition_equipment(first),
        contributing_equipment(
            bundle, institution_name=ctx.institution_name, station_name=ctx.station_name
        ),
        hd.ContributingEquipment.for_highdicom(),
    ]
    if siblings:
        study_uid = str(first.StudyInstanceUID)
        document.PertinentOtherEvidenceSequence = hierarchical_references(
            (study_uid, *s.reference()) for s in siblings
        )
    return document


def referenced_instances(item: Dataset) -> Iterator[str]:
    """SOP Instance UIDs that IMAGE / COMPOSITE / WAVEFORM items under ``item`` reference
    (by-reference items have no value type: they point to an item, not an instance)."""
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") in _REFERENCING_VALUE_TYPES:
            for ref in child.get("ReferencedSOPSequence", []):
                yield str(ref.ReferencedSOPInstanceUID)
        yield from referenced_instances(child)


def hierarchical_references(references: Iterator[tuple[str, str, str, str]]) -> list[Dataset]:
    """SOP Instance Reference Macro items (study > series > instances) of (study UID, series
    UID, SOP class UID, SOP instance UID) tuples, in first-seen order."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for study_uid, series_uid, sop_class_uid, sop_instance_uid in references:
        instance = Dataset()
        instance.ReferencedSOPClassUID = sop_class_uid
        instance.ReferencedSOPInstanceUID = sop_instance_uid
        studies.setdefault(study_uid, {}).setdefault(series_uid, []).append(instance)
    items = []
    for study_uid, series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, instances in series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = instances
            study.ReferencedSeriesSequence.append(item)
        items.append(study)
    return items


def _acquisition_equipment(source: Dataset) -> list[hd.ContributingEquipment]:
    """The source image's acquisition equipment, when its header names it (as highdicom adds
    for the documents it builds)."""
    try:
        return [hd.ContributingEquipment.for_image_acquisition(source)]
    except (AttributeError, TypeError, ValueError):
        return []
