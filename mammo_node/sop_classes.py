"""The DICOM SOP classes the node receives, by name (PS3.4 Annex B / PS3.6 Annex A).

Receiving (SCP, STOW-RS) accepts them; grouping decides which of them can fill a slot.
"""

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
BREAST_PROJECTION_PRESENTATION = "1.2.840.10008.5.1.4.1.1.13.1.4"
BREAST_PROJECTION_PROCESSING = "1.2.840.10008.5.1.4.1.1.13.1.5"

#: SOP classes the node accepts from outside, with a short name for logs and tables.
ACCEPTED_SOP_CLASSES: dict[str, str] = {
    MG_PRESENTATION: "MG For Presentation",
    MG_PROCESSING: "MG For Processing",
    DX_PRESENTATION: "DX For Presentation",
    DX_PROCESSING: "DX For Processing",
    CR_IMAGE: "CR",
    SECONDARY_CAPTURE: "Secondary Capture",
    BREAST_TOMOSYNTHESIS: "Breast Tomosynthesis",
    BREAST_PROJECTION_PRESENTATION: "Breast Projection For Presentation",
    BREAST_PROJECTION_PROCESSING: "Breast Projection For Processing",
}
