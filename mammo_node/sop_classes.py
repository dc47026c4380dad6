"""The DICOM SOP classes the node receives, by name (PS3.4 Annex B / PS3.6 Annex A).

Receiving (SCP, STOW-RS) accepts *every* storage SOP class: a modality sends its dose report,
presentation states, key object notes and other vendors' CAD SR with the images, and a refused
context makes it retry the whole study forever. Grouping then decides which of them can fill a
slot: only the image classes in ``SCORABLE_IMAGE_CLASSES``; everything else is filed as a
companion of its exam.
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom.sop_class import _STORAGE_CLASSES

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_GRAYSCALE_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"
SC_MULTIFRAME_GRAYSCALE_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
BREAST_PROJECTION_PRESENTATION = "1.2.840.10008.5.1.4.1.1.13.1.4"
BREAST_PROJECTION_PROCESSING = "1.2.840.10008.5.1.4.1.1.13.1.5"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
GRAYSCALE_SOFTCOPY_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"

#: Image SOP classes that can fill one of the four screening slots, with a short name.
SCORABLE_IMAGE_CLASSES: dict[str, str] = {
    MG_PRESENTATION: "MG For Presentation",
    MG_PROCESSING: "MG For Processing",
    DX_PRESENTATION: "DX For Presentation",
    DX_PROCESSING: "DX For Processing",
    CR_IMAGE: "CR",
    SECONDARY_CAPTURE: "Secondary Capture",
}

#: Breast tomosynthesis and projection objects: filed with the exam, never scored (3D / raw).
TOMOSYNTHESIS_CLASSES: dict[str, str] = {
    BREAST_TOMOSYNTHESIS: "Breast Tomosynthesis",
    BREAST_PROJECTION_PRESENTATION: "Breast Projection For Presentation",
    BREAST_PROJECTION_PROCESSING: "Breast Projection For Processing",
}

#: Every public storage SOP class pynetdicom knows (PS3.4 Annex B), by UID -> keyword.
STORAGE_SOP_CLASSES: dict[str, str] = {str(uid): name for name, uid in _STORAGE_CLASSES.items()}

#: The SOP classes the node names in its own tables; the rest are shown by keyword or UID.
ACCEPTED_SOP_CLASSES: dict[str, str] = {**SCORABLE_IMAGE_CLASSES, **TOMOSYNTHESIS_CLASSES}

# Every public storage SOP class lives under this arc (PS3.6 Annex A); a newer one than the
# installed pynetdicom knows is still a storage class.
_STORAGE_ARC = "1.2.840.10008.5.1.4.1.1."
_DICOM_ROOT = "1.2.840.10008."


def is_storage_sop_class(uid: str) -> bool:
    """Would the node file an object of this SOP class?

    Yes for every public storage class (known or newer than this pynetdicom) and every private
    SOP class (vendors' raw data, private CAD or dose objects: sent as C-STORE with the study).
    No for the other public services (Verification, Query/Retrieve, Worklist...).
    """
    uid = str(uid).strip()
    if not uid:
        return False
    if uid in STORAGE_SOP_CLASSES or uid.startswith(_STORAGE_ARC):
        return True
    return not uid.startswith(_DICOM_ROOT)


def sop_class_name(uid: str) -> str:
    """A short name for tables and logs: ours, pynetdicom's keyword, pydicom's name, the UID."""
    if uid in ACCEPTED_SOP_CLASSES:
        return ACCEPTED_SOP_CLASSES[uid]
    if uid in STORAGE_SOP_CLASSES:
        return STORAGE_SOP_CLASSES[uid]
    name = UID(uid).name
    return name if name and name != uid else f"private {uid}"
