"""Coded concepts and score wording shared by the SR, SC and SEG writers.

Scores are labelled honestly (see ../shared/docs/DICOM_OUTPUTS.md section 1):

- a bundle whose ``score_kind`` is ``"probability"`` reports DCM 111047 "Probability of cancer"
  in UCUM ``%`` (the 0..1 value times 100);
- any other bundle (``"logit_difference"``, the paper's logit(positive) - logit(negative)) reports
  a local concept "Cancer score (uncalibrated logit difference)" in the UCUM annotation unit
  ``{score}``. DICOM has no standard concept for an uncalibrated AI score, so the concept lives in
  the local coding scheme ``99MNODE`` that every SR declares in its Coding Scheme Identification
  Sequence.

Every text that goes into an output is ASCII, so it survives any Specific Character Set copied
from the source images.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes

from mammo_node.domain import BundleInfo, Laterality, Slot, View
from mammo_node.errors import OutputError

PROBABILITY = "probability"
LOGIT_DIFFERENCE = "logit_difference"
SCORE_KINDS = (PROBABILITY, LOGIT_DIFFERENCE)

LOCAL_SCHEME = "99MNODE"
LOCAL_SCHEME_ITEM = CodingSchemeIdentificationItem(
    designator=LOCAL_SCHEME,
    name="mammo-node local concepts",
    responsible_organization="mammo-node project",
)

# --- what is measured -----------------------------------------------------------------
PROBABILITY_OF_CANCER = hd.sr.CodedConcept("111047", "DCM", "Probability of cancer")
UNCALIBRATED_SCORE = hd.sr.CodedConcept(
    "CANCERSCORE", LOCAL_SCHEME, "Cancer score (uncalibrated logit difference)"
)
OPERATING_POINT_VERDICT = hd.sr.CodedConcept("OPVERDICT", LOCAL_SCHEME, "Operating point verdict")
# breast / exam aggregates of a probability bundle: sums (and the max of sums) of two view
# probabilities - a ranking score, not a probability, so never DCM 111047 nor %
AGGREGATE_OF_PROBABILITIES = hd.sr.CodedConcept(
    "PROBSUM", LOCAL_SCHEME, "Sum of view probabilities (not a probability)"
)
READING_CATEGORY = hd.sr.CodedConcept("CATEGORY", LOCAL_SCHEME, "Cancer likelihood category 1-10")
RECOMMENDED_FOLLOW_UP = hd.sr.CodedConcept("111053", "DCM", "Recommended Follow-up")
RECALL_SUGGESTED = hd.sr.CodedConcept("386053000", "SCT", "Evaluation procedure")  # CID 6028
NO_RECALL = hd.sr.CodedConcept("111140", "DCM", "Normal interval follow-up")  # CID 6028
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "Percent")
SCORE_UNIT = hd.sr.CodedConcept("{score}", "UCUM", "score")

# --- how a score was derived (CID 7464) --------------------------------------------------
MEAN = hd.sr.CodedConcept(*codes.cid7464.Mean)  # image score = mean(holistic, attention)
TOTAL = hd.sr.CodedConcept(*codes.cid7464.Total)  # breast score = CC + MLO
MAXIMUM = hd.sr.CodedConcept(*codes.cid7464.Maximum)  # exam score = max over breasts

# --- where --------------------------------------------------------------------------------
BREAST = hd.sr.CodedConcept("76752008", "SCT", "Breast")
RIGHT = hd.sr.CodedConcept("24028007", "SCT", "Right")
LEFT = hd.sr.CodedConcept("7771000", "SCT", "Left")
RIGHT_AND_LEFT = hd.sr.CodedConcept("51440002", "SCT", "Right and left")
CRANIO_CAUDAL = hd.sr.CodedConcept("399162004", "SCT", "cranio-caudal")
MEDIO_LATERAL_OBLIQUE = hd.sr.CodedConcept("399368009", "SCT", "medio-lateral oblique")
IMAGE_LATERALITY = hd.sr.CodedConcept("111027", "DCM", "Image Laterality")
IMAGE_VIEW = hd.sr.CodedConcept("111031", "DCM", "Image View")

# --- geometry purposes (CID 219) ----------------------------------------------------------
BOUNDED_BY = hd.sr.CodedConcept(*codes.cid219.BoundedBy)
CENTER = hd.sr.CodedConcept(*codes.cid219.Center)

# --- documents, algorithms, segments --------------------------------------------------------
MAMMOGRAPHY = hd.sr.CodedConcept("71651007", "SCT", "Mammography")  # procedure reported
ARTIFICIAL_INTELLIGENCE = hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence")
SPATIAL_AND_RELATIONAL = hd.sr.CodedConcept("309825002", "SCT", "Spatial and Relational Concept")
SALIENCY = hd.sr.CodedConcept("130404", "DCM", "Saliency")

MANUFACTURER = "mammo-node"


def laterality_code(laterality: Laterality) -> hd.sr.CodedConcept:
    return RIGHT if laterality is Laterality.R else LEFT


def view_code(view: View) -> hd.sr.CodedConcept:
    return CRANIO_CAUDAL if view is View.CC else MEDIO_LATERAL_OBLIQUE


def breast_site(laterality: Laterality | None) -> hd.sr.FindingSite:
    """Finding site SCT Breast with laterality Right / Left (None = both breasts)."""
    side = RIGHT_AND_LEFT if laterality is None else laterality_code(laterality)
    return hd.sr.FindingSite(anatomic_location=BREAST, laterality=side)


def check_score_kind(bundle: BundleInfo) -> None:
    if bundle.score_kind not in SCORE_KINDS:
        raise OutputError(
            f'Bundle "{bundle.name}" {bundle.version}: score_kind should be one of '
            f"{', '.join(SCORE_KINDS)}, got {bundle.score_kind!r}."
        )


def is_probability(bundle: BundleInfo) -> bool:
    check_score_kind(bundle)
    return bundle.score_kind == PROBABILITY


def score_concept(bundle: BundleInfo) -> hd.sr.CodedConcept:
    return PROBABILITY_OF_CANCER if is_probability(bundle) else UNCALIBRATED_SCORE


def score_unit(bundle: BundleInfo) -> hd.sr.CodedConcept:
    return PERCENT if is_probability(bundle) else SCORE_UNIT


def reported_value(bundle: BundleInfo, score: float) -> float:
    """The number written into a NUM item: % for probabilities, the raw score otherwise."""
    if is_probability(bundle):
        if not 0.0 <= score <= 1.0:
            raise OutputError(
                f'Bundle "{bundle.name}" reports probabilities, but a score is {score!r} '
                "(outside 0..1)."
            )
        return round(score * 100.0, 6)
    return round(float(score), 6)


def aggregate_concept(bundle: BundleInfo) -> hd.sr.CodedConcept:
    """Concept of a breast or exam score (a sum / max of view scores)."""
    return AGGREGATE_OF_PROBABILITIES if is_probability(bundle) else UNCALIBRATED_SCORE


def aggregate_value(bundle: BundleInfo, score: float) -> float:
    """A breast / exam aggregate as written: the raw number, never scaled to %."""
    check_score_kind(bundle)
    return round(float(score), 6)


def format_aggregate(bundle: BundleInfo, score: float) -> str:
    """Burned-in / text form of an aggregate: always a plain number (``"1.23"``)."""
    check_score_kind(bundle)
    return f"{score:.2f}"


def aggregate_words(bundle: BundleInfo) -> str:
    if is_probability(bundle):
        return "sum of its CC and MLO view probabilities, not itself a probability"
    return "sum of its CC and MLO view scores, uncalibrated"


def score_from_reported(bundle: BundleInfo, value: float) -> float:
    """Inverse of :func:`reported_value` (for reading an SR back)."""
    return value / 100.0 if is_probability(bundle) else value


def format_score(bundle: BundleInfo, score: float) -> str:
    """Short text for burned-in labels: ``"12.3 %"`` or ``"1.23"``."""
    if is_probability(bundle):
        return f"{score * 100.0:.1f} %"
    return f"{score:.2f}"


def score_explanation(bundle: BundleInfo) -> str:
    """One sentence saying what the numbers are."""
    if is_probability(bundle):
        head = (
            "Image scores are probabilities of cancer, reported in percent; breast and exam "
            "scores are sums of two view probabilities (ranking scores, not probabilities)."
        )
    else:
        head = (
            "Scores are uncalibrated: the logit difference logit(cancer) - logit(no cancer) "
            "of the model; they are not probabilities."
        )
    return (
        f"{head} Image score = mean of the holistic and attention model scores; "
        "breast score = sum of its CC and MLO image scores; exam score = maximum of the "
        "breast scores."
    )


DEMO_NOTICE = "DEMO model - NOT FOR CLINICAL USE"


def demo_notice(bundle: BundleInfo) -> str | None:
    return DEMO_NOTICE if bundle.is_demo else None


def slot_words(slot: Slot) -> str:
    side = "right" if slot.laterality is Laterality.R else "left"
    return f"{side} {slot.view.value}"
