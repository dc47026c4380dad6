"""Which exam and which view an image is, whether it can be scored, and when an exam is ready.

``classify`` reads one dataset's tags in the order ARCHITECTURE.md gives and records which tag
decided. ``resolve`` looks at all images of an exam together (For Processing twins, more than
one candidate per slot, undecodable pixels) and says which image fills each slot and why the
others are kept out. ``decide`` turns that and the arrival times into the exam's next state.
All three are pure; ``mammo_node.filing.ingest`` and the grouping service store what they return.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydicom import Dataset

from mammo_node.domain import (
    SLOTS,
    ExamState,
    Laterality,
    NotScoredReason,
    PixelCheck,
    Slot,
    View,
)
from mammo_node.sop_classes import (
    ACCEPTED_SOP_CLASSES,
    BREAST_PROJECTION_PRESENTATION,
    BREAST_PROJECTION_PROCESSING,
    BREAST_TOMOSYNTHESIS,
    DX_PROCESSING,
    MG_PROCESSING,
    SECONDARY_CAPTURE,
)

_PROCESSING_CLASSES = {MG_PROCESSING, DX_PROCESSING, BREAST_PROJECTION_PROCESSING}
_TOMO_CLASSES = {
    BREAST_TOMOSYNTHESIS,
    BREAST_PROJECTION_PRESENTATION,
    BREAST_PROJECTION_PROCESSING,
}
# Secondary Capture conversion types that carry an original image (film, digital interface,
# scanned image); WSD / SYN and the like are screenshots or derived pictures.
_SC_IMAGE_CONVERSIONS = {"DF", "DI", "SI"}

# --- view codes (SNOMED CT and the old SRT equivalents) --------------------------------
_VIEW_CODES: dict[str, str] = {
    "399162004": "CC",
    "R-10242": "CC",
    "399368009": "MLO",
    "R-10226": "MLO",
    "399260004": "ML",
    "R-10224": "ML",
    "399352003": "LM",
    "R-10228": "LM",
    "399099002": "LMO",
    "R-10230": "LMO",
    "399196006": "FB",
    "399188001": "SIO",
    "399192008": "XCCL",
    "R-1024A": "XCCL",
    "399101009": "XCCM",
    "R-1024B": "XCCM",
    "399265009": "AT",
    "399110001": "TAN",
    "399197002": "RL",
    "399226006": "RM",
}
_TEXT_LATERALITY = [
    (re.compile(r"\b(L|LEFT|LT)\b|\bL(?=CC|MLO)|^L[-_ ]", re.I), Laterality.L),
    (re.compile(r"\b(R|RIGHT|RT)\b|\bR(?=CC|MLO)|^R[-_ ]", re.I), Laterality.R),
]
_TEXT_VIEW = re.compile(r"(?<![A-Z])(?:[LR])?(MLO|CC)(?![A-Z])", re.I)
_NON_SCREENING_TEXT = re.compile(
    r"\b(SPOT|MAG|MAGNIF\w*|IMPLANT|ID|XCCL|XCCM|TAN|CV|FB|SIO|LMO|AT)\b", re.I
)


@dataclass(frozen=True)
class Classification:
    """What one image's own tags say. ``rule`` is set when they alone keep it unscored."""

    laterality: Laterality | None
    laterality_source: str
    view: str | None  # raw view label (CC, MLO, ML, XCCL...)
    view_source: str
    slot: Slot | None
    for_processing: bool
    rule: NotScoredReason | None = None
    rule_detail: str = ""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return " ".join(str(v) for v in value)
    return str(value)


def _read_laterality(ds: Dataset) -> tuple[Laterality | None, str, str]:
    """(laterality, deciding tag, detail) in the order: ImageLaterality, Laterality,
    FrameLaterality, SeriesDescription / ProtocolName text."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = _text(ds, keyword).strip().upper()
        if value in ("L", "R"):
            return Laterality(value), keyword, ""
        if value in ("B", "U"):
            return None, keyword, f"{keyword} is {value!r} (bilateral/unpaired)"
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(group, [])[:1]:
            for anatomy in item.get("FrameAnatomySequence", []):
                value = str(anatomy.get("FrameLaterality", "")).upper()
                if value in ("L", "R"):
                    return Laterality(value), "FrameLaterality", ""
    for keyword in ("SeriesDescription", "ProtocolName"):
        text = _text(ds, keyword)
        found = {lat for pattern, lat in _TEXT_LATERALITY if pattern.search(text)}
        if len(found) == 1:
            return found.pop(), keyword, ""
    return None, "", "no laterality in ImageLaterality, Laterality, FrameLaterality or text"


def _read_view(ds: Dataset) -> tuple[str | None, str, str]:
    """(view label, deciding tag, non-screening modifier text or '')."""
    for item in ds.get("ViewCodeSequence", [])[:1]:
        code = str(item.get("CodeValue", "")).strip()
        meaning = str(item.get("CodeMeaning", "")).strip()
        modifiers = [
            str(m.get("CodeMeaning", m.get("CodeValue", "")))
            for m in item.get("ViewModifierCodeSequence", [])
        ]
        label = _VIEW_CODES.get(code)
        if label is None and meaning:
            lowered = meaning.lower().replace("-", "").replace(" ", "")
            if lowered == "craniocaudal":
                label = "CC"
            elif lowered == "mediolateraloblique":
                label = "MLO"
            else:
                label = meaning
        if label:
            return label, "ViewCodeSequence", ", ".join(modifiers)
    position = _text(ds, "ViewPosition").strip().upper()
    if position:
        return position, "ViewPosition", ""
    for keyword in ("PatientOrientation", "SeriesDescription", "ProtocolName"):
        text = _text(ds, keyword)
        views = {m.upper() for m in _TEXT_VIEW.findall(text)}
        if len(views) == 1:
            modifier = _NON_SCREENING_TEXT.search(text)
            return views.pop(), keyword, modifier.group(0) if modifier else ""
    return None, "", ""


def _count(ds: Dataset, keyword: str) -> int | None:
    """A count from the header (1 when absent); None when its value is not a number (found by
    fuzzing: an IS value of 'T' raised inside the rules)."""
    try:
        return int(ds.get(keyword, 1) or 1)
    except (TypeError, ValueError, OverflowError):
        return None


def classify(ds: Dataset) -> Classification:
    """Read laterality, view and the single-image rules from one dataset's tags."""
    sop_class = str(ds.get("SOPClassUID", ""))
    intent = _text(ds, "PresentationIntentType").upper()
    for_processing = sop_class in _PROCESSING_CLASSES or intent == "FOR PROCESSING"
    laterality, lat_source, lat_detail = _read_laterality(ds)
    view, view_source, modifiers = _read_view(ds)
    slot = None
    if laterality is not None and view in ("CC", "MLO") and not modifiers:
        slot = Slot(laterality, View(view))

    def kept_out(rule: NotScoredReason, detail: str) -> Classification:
        return Classification(
            laterality, lat_source, view, view_source, slot, for_processing, rule, detail
        )

    if sop_class in _TOMO_CLASSES:
        name = ACCEPTED_SOP_CLASSES[sop_class]
        return kept_out(NotScoredReason.TOMOSYNTHESIS, f"{name}: only 2D mammograms are scored")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        return kept_out(NotScoredReason.NOT_AN_IMAGE, "no pixel data")
    if sop_class == SECONDARY_CAPTURE:
        conversion = _text(ds, "ConversionType").upper()
        if conversion not in _SC_IMAGE_CONVERSIONS:
            return kept_out(
                NotScoredReason.NOT_AN_IMAGE,
                f"Secondary Capture with ConversionType {conversion or 'absent'!r} is not an "
                "original mammogram (DF, DI or SI expected)",
            )
    samples, frames = _count(ds, "SamplesPerPixel"), _count(ds, "NumberOfFrames")
    if samples != 1 or frames != 1:
        return kept_out(
            NotScoredReason.UNSUPPORTED_PIXELS,
            f"{samples} samples per pixel, {frames} frames: one greyscale frame expected",
        )
    if modifiers:
        return kept_out(NotScoredReason.NON_SCREENING_VIEW, f"view modifier: {modifiers}")
    if view is None:
        return kept_out(
            NotScoredReason.UNKNOWN_VIEW,
            "no view in ViewCodeSequence, ViewPosition, PatientOrientation or text",
        )
    if view not in ("CC", "MLO"):
        return kept_out(
            NotScoredReason.NON_SCREENING_VIEW, f"view {view} (from {view_source}) is not CC/MLO"
        )
    if laterality is None:
        return kept_out(NotScoredReason.UNKNOWN_LATERALITY, lat_detail)
    return Classification(laterality, lat_source, view, view_source, slot, for_processing)


# --- the exam as a whole ----------------------------------------------------------------
@dataclass(frozen=True)
class ImageFacts:
    """The stored facts about one received image that ``resolve`` needs."""

    sop_instance_uid: str
    slot: Slot | None
    for_processing: bool
    rule: NotScoredReason | None
    rule_detail: str
    pixel_check: PixelCheck
    pixel_detail: str = ""


@dataclass(frozen=True)
class NotScored:
    sop_instance_uid: str
    reason: NotScoredReason
    detail: str


@dataclass
class Resolution:
    slots: dict[Slot, str | None]
    not_scored: list[NotScored] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # pixel check not done yet

    @property
    def missing(self) -> list[Slot]:
        return [slot for slot in SLOTS if self.slots[slot] is None]


def resolve(images: Iterable[ImageFacts]) -> Resolution:
    """Assign at most one image per slot and say why every other image is kept out."""
    images = list(images)
    resolution = Resolution(slots=dict.fromkeys(SLOTS))
    presentation_slots = {
        i.slot for i in images if i.slot is not None and not i.for_processing and i.rule is None
    }
    candidates: dict[Slot, list[ImageFacts]] = {slot: [] for slot in SLOTS}
    for image in images:
        if image.rule is not None:
            resolution.not_scored.append(
                NotScored(image.sop_instance_uid, image.rule, image.rule_detail)
            )
        elif image.for_processing:
            twin = image.slot in presentation_slots
            resolution.not_scored.append(
                NotScored(
                    image.sop_instance_uid,
                    NotScoredReason.FOR_PROCESSING_TWIN
                    if twin
                    else NotScoredReason.FOR_PROCESSING_ONLY,
                    "a For Presentation image of this view is scored instead"
                    if twin
                    else "For Processing (raw) image; the model reads For Presentation images",
                )
            )
        elif image.pixel_check == PixelCheck.FAILED:
            resolution.not_scored.append(
                NotScored(image.sop_instance_uid, NotScoredReason.UNDECODABLE, image.pixel_detail)
            )
        elif image.slot is not None:
            candidates[image.slot].append(image)
            if image.pixel_check != PixelCheck.OK:
                resolution.pending.append(image.sop_instance_uid)
    for slot, found in candidates.items():
        if len(found) == 1:
            resolution.slots[slot] = found[0].sop_instance_uid
        elif len(found) > 1:
            uids = ", ".join(sorted(i.sop_instance_uid for i in found))
            for image in found:
                resolution.not_scored.append(
                    NotScored(
                        image.sop_instance_uid,
                        NotScoredReason.DUPLICATE_SLOT,
                        f"{len(found)} candidate images for {slot}: {uids}",
                    )
                )
    return resolution


@dataclass(frozen=True)
class Decision:
    state: ExamState
    reason: str
    missing: tuple[str, ...] = ()


def decide(
    resolution: Resolution,
    *,
    last_received_at: dt.datetime,
    now: dt.datetime,
    quiet_seconds: float,
    stable_seconds: float,
) -> Decision | None:
    """Next state of a RECEIVING exam, or None while it should keep waiting.

    READY: four slots filled and no image for ``quiet_seconds``. PARTIAL: idle for
    ``stable_seconds`` with slots still missing (it names them).
    """
    idle = (now - last_received_at).total_seconds()
    missing = tuple(str(slot) for slot in resolution.missing)
    if resolution.pending:
        return None  # pixel checks decide whether a slot is really filled
    if not missing and idle >= quiet_seconds:
        return Decision(ExamState.READY, "4 views received")
    if missing and idle >= stable_seconds:
        kept_out = {n.reason.value for n in resolution.not_scored}
        why = f"missing views: {', '.join(missing)}"
        if kept_out:
            why += f" (images kept out: {', '.join(sorted(kept_out))})"
        return Decision(ExamState.PARTIAL, why, missing)
    return None


def describe_slots(resolution: Resolution) -> dict[str, str | None]:
    return {str(slot): uid for slot, uid in resolution.slots.items()}


def summarise(not_scored: Sequence[NotScored]) -> list[dict[str, str]]:
    return [
        {"sop_instance_uid": n.sop_instance_uid, "reason": n.reason.value, "detail": n.detail}
        for n in not_scored
    ]
