"""IHE IOCM rejection note: withdraw the image-like outputs of a result that a rescore replaced.

A re-scored exam (a late image, a new bundle) gets new SRs that list the old ones as Predecessor
Documents; the old Secondary Captures, Segmentations and presentation states have no such
mechanism and would stay on the PACS next to the new ones. This Key Object Selection document
(KOS, IHE IOCM "Rejection Note") references them; archives and viewers that support IOCM hide
them.

Title: DCM 113001 "Rejected for Quality Reasons". Of the IOCM titles (CID 7011) it is the one
for instances that are correct in identity but should no longer be used - here, superseded AI
results. 113037 "Rejected for Patient Safety Reasons" is for instances whose use could harm a
patient (and makes archives refuse the instances), 113038 "Incorrect Modality Worklist Entry"
for instances filed under the wrong order or patient, 113039 "Data Retention Policy Expired"
for deletion; none of these describes a result replaced by a newer one. Archives keep instances
rejected for quality reasons (they can be restored), so the history stays auditable.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes as pcodes

import mammo_node
from mammo_node.domain import BundleInfo
from mammo_node.writers import codes
from mammo_node.writers.identity import OutputIdentity, ReferencedDocument
from mammo_node.writers.sources import (
    IDENTITY_KEYWORDS,
    ScoredView,
    contributing_equipment,
)

REJECTED_FOR_QUALITY_REASONS = hd.sr.CodedConcept(*pcodes.DCM.RejectedForQualityReasons)
_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
}


def _reference(document: ReferencedDocument, source: Dataset) -> Dataset:
    """A stand-in dataset for one withdrawn instance (what highdicom's KOS reads from it)."""
    ds = Dataset()
    for keyword in IDENTITY_KEYWORDS:
        if keyword in source:
            ds[keyword] = source[keyword]
    ds.StudyInstanceUID = document.study_instance_uid
    ds.SeriesInstanceUID = document.series_instance_uid
    ds.SOPInstanceUID = document.sop_instance_uid
    ds.SOPClassUID = document.sop_class_uid
    if document.sop_class_uid in _IMAGE_CLASSES:
        ds.Rows, ds.Columns = 1, 1  # marks it an image reference (IMAGE, not COMPOSITE)
    return ds


def build_rejection_note(
    withdrawn: Sequence[ReferencedDocument],
    views: Sequence[ScoredView],
    bundle: BundleInfo,
    identity: OutputIdentity,
    *,
    revision: int,
    institution_name: str | None,
    station_name: str | None,
    now: datetime.datetime,
) -> hd.ko.KeyObjectSelectionDocument:
    """The KOS withdrawing ``withdrawn`` (outputs of the result revision ``revision`` replaces)."""
    source = views[0].header
    references = [_reference(d, source) for d in withdrawn]
    content = hd.ko.KeyObjectSelection(
        document_title=REJECTED_FOR_QUALITY_REASONS,
        referenced_objects=references,
        description=(
            f"Superseded AI results: replaced by result revision {revision} of "
            f"{bundle.name} {bundle.version}."
        )[:1024],
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=references,
        content=content,
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=codes.MANUFACTURER,
        institution_name=institution_name,
        contributing_equipment=[
            contributing_equipment(
                bundle, institution_name=institution_name, station_name=station_name
            )
        ],
    )
    kos.SeriesDescription = identity.series_description
    kos.ContentDate = now.strftime("%Y%m%d")
    kos.ContentTime = now.strftime("%H%M%S")
    kos.SoftwareVersions = mammo_node.__version__
    if station_name:
        kos.StationName = station_name
    return kos
