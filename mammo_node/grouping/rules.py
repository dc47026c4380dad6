"""Which exam and which view an image is, whether it can be scored, and when an exam is ready.

``classify`` reads one dataset's tags in the order ARCHITECTURE.md gives and records which tag
decided; ``selection_facts`` reads the facts that only matter beside the study's other objects
(acquisition time, synthesized 2D, implant, the patient, what a rejection note withdraws).
``resolve`` looks at all objects of a study together and gives each one its role (scored,
repeat, synthesized 2D beside FFDM, rejected, prior, companion...) with the rule that decided.
``decide`` turns that and the arrival times into the exam's next state. All are pure;
``mammo_node.filing.ingest`` and the grouping service store what they return.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset

from mammo_node.domain import (
    SLOTS,
    ExamState,
    Laterality,
    NotScoredReason,
    ObjectKind,
    ObjectRole,
    PixelCheck,
    Slot,
    View,
)
from mammo_node.sop_classes import (
    BREAST_PROJECTION_PRESENTATION,  # noqa: F401 - re-exported for callers of the rules
    BREAST_PROJECTION_PROCESSING,
    BREAST_TOMOSYNTHESIS,  # noqa: F401 - re-exported for callers of the rules
    DX_PROCESSING,
    KEY_OBJECT_SELECTION,
    MG_PROCESSING,
    SCORABLE_IMAGE_CLASSES,
    SECONDARY_CAPTURE,
    TOMOSYNTHESIS_CLASSES,
    sop_class_name,
)

_PROCESSING_CLASSES = {MG_PROCESSING, DX_PROCESSING, BREAST_PROJECTION_PROCESSING}
_TOMO_CLASSES = set(TOMOSYNTHESIS_CLASSES)
# Secondary Capture conversion types of film digitisers and scanners: an 8-bit greyscale image
# from them is a digitised film; from a workstation (WSD, SYN...) 8 bits is a screenshot.
_SC_FILM_CONVERSIONS = {"DF", "DI", "SI"}
_SC_MIN_SIDE = 512  # pixels: a screening mammogram, even digitised at 200 um, is larger

# IHE IOCM rejection notes: KOS document titles (DCM codes) that withdraw the images they list.
REJECTION_TITLES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
# Synthesized 2D (generated from a tomosynthesis sweep) by ImageType value or series text.
_SYNTH_IMAGE_TYPES = {"GENERATED_2D", "SYNTHESIZED", "SYNTHETIC", "C-VIEW", "CVIEW", "V-PREVIEW"}
_SYNTH_TEXT = re.compile(
    r"c-?view|v-?preview|\bs-view\b|insight\s*2d|intelligent\s*2d|synthe\w*|\bs2d\b"
    r"|generated\s*2d",
    re.I,
)
# ImageType values of tomosynthesis projections / slices stored under a 2D image class
_TOMO_IMAGE_TYPES = {"TOMO", "TOMOSYNTHESIS", "TOMO_PROJ", "PROJECTION", "VOLUME", "RECON"}

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


def _secondary_capture_refusal(ds: Dataset) -> tuple[NotScoredReason, str] | None:
    """A Secondary Capture is judged by what it holds, not by its ConversionType alone:
    a greyscale breast image of mammogram size and depth (a digitised film, a converted
    mammogram) is scored; a screenshot, a colour picture or a thumbnail is not. Burned-in
    annotation alone says nothing: digitised films carry their film labels."""
    modality = _text(ds, "Modality").strip().upper()
    body_part = _text(ds, "BodyPartExamined").strip().upper()
    conversion = _text(ds, "ConversionType").strip().upper() or "absent"
    if modality != "MG" and "BREAST" not in body_part:
        return (
            NotScoredReason.NOT_AN_IMAGE,
            f"Secondary Capture of modality {modality or 'absent'!r}, body part "
            f"{body_part or 'absent'!r}: not a mammogram (MG or BREAST expected)",
        )
    photometric = _text(ds, "PhotometricInterpretation").strip().upper()
    samples = _count(ds, "SamplesPerPixel")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return (
            NotScoredReason.UNSUPPORTED_PIXELS,
            f"Secondary Capture in {photometric or 'unknown'} ({samples} samples): a picture, "
            "not a greyscale mammogram",
        )
    bits = _count(ds, "BitsStored", absent=0) or 0
    if bits < 8 or (bits == 8 and conversion not in _SC_FILM_CONVERSIONS):
        return (
            NotScoredReason.NOT_AN_IMAGE,
            f"Secondary Capture of {bits} bits with ConversionType {conversion}: a screenshot "
            "(mammograms have 10 bits or more; 8 only from a film digitiser: DF, DI, SI)",
        )
    rows = _count(ds, "Rows", absent=0) or 0
    columns = _count(ds, "Columns", absent=0) or 0
    if min(rows, columns) < _SC_MIN_SIDE:
        return (
            NotScoredReason.NOT_AN_IMAGE,
            f"Secondary Capture of {columns}x{rows} pixels: too small for a mammogram "
            f"(at least {_SC_MIN_SIDE} on each side)",
        )
    return None


def object_kind(ds: Dataset) -> ObjectKind:
    """Image, tomosynthesis, rejection note or companion, from the SOP class (and KOS title)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in SCORABLE_IMAGE_CLASSES:
        return ObjectKind.IMAGE
    if sop_class in _TOMO_CLASSES:
        return ObjectKind.TOMOSYNTHESIS
    if sop_class == KEY_OBJECT_SELECTION and _rejection_title(ds):
        return ObjectKind.REJECTION_NOTE
    return ObjectKind.COMPANION


def _count(ds: Dataset, keyword: str, *, absent: int = 1) -> int | None:
    """A count from the header (``absent`` when missing); None when its value is not a number
    (found by fuzzing: an IS value of 'T' raised inside the rules)."""
    try:
        return int(ds.get(keyword, absent) or absent)
    except (TypeError, ValueError, OverflowError):
        return None


def classify(ds: Dataset) -> Classification:
    """Read laterality, view and the single-image rules from one dataset's tags."""
    sop_class = str(ds.get("SOPClassUID", ""))
    intent = _text(ds, "PresentationIntentType").upper()
    for_processing = sop_class in _PROCESSING_CLASSES or intent == "FOR PROCESSING"
    laterality, lat_source, lat_detail = _read_laterality(ds)
    view, view_source, modifiers = _read_view(ds)
    # some vendors put the modifier beside the view code instead of inside it
    outer = [
        str(m.get("CodeMeaning", m.get("CodeValue", "")))
        for m in ds.get("ViewModifierCodeSequence", [])
    ]
    modifiers = ", ".join(x for x in (modifiers, *outer) if x)
    slot = None
    if laterality is not None and view in ("CC", "MLO") and not modifiers:
        slot = Slot(laterality, View(view))

    def kept_out(rule: NotScoredReason, detail: str) -> Classification:
        return Classification(
            laterality, lat_source, view, view_source, slot, for_processing, rule, detail
        )

    if sop_class in _TOMO_CLASSES:
        name = TOMOSYNTHESIS_CLASSES[sop_class]
        return kept_out(NotScoredReason.TOMOSYNTHESIS, f"{name}: only 2D mammograms are scored")
    image_types = {str(v).strip().upper() for v in ds.get("ImageType", [])}
    if image_types & _TOMO_IMAGE_TYPES and not image_types & _SYNTH_IMAGE_TYPES:
        found = ", ".join(sorted(image_types & _TOMO_IMAGE_TYPES))
        return kept_out(
            NotScoredReason.TOMOSYNTHESIS,
            f"ImageType {found}: a tomosynthesis projection or slice, not a 2D mammogram",
        )
    if sop_class not in SCORABLE_IMAGE_CLASSES:
        return kept_out(
            NotScoredReason.NOT_AN_IMAGE, f"{sop_class_name(sop_class)}: filed with the exam"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        return kept_out(NotScoredReason.NOT_AN_IMAGE, "no pixel data")
    if sop_class == SECONDARY_CAPTURE and (refusal := _secondary_capture_refusal(ds)):
        return kept_out(*refusal)
    if _text(ds, "PartialView").strip().upper() == "YES":
        what = (
            ", ".join(
                str(item.get("CodeMeaning", item.get("CodeValue", "")))
                for item in ds.get("PartialViewCodeSequence", [])
            )
            or _text(ds, "PartialViewDescription")
            or "PartialView YES"
        )
        return kept_out(
            NotScoredReason.PARTIAL_VIEW,
            f"partial view ({what}): one tile of a mosaic, the model reads whole breasts",
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


# --- facts that matter beside the study's other objects -------------------------------
def _digits(value: object) -> str:
    return "".join(ch for ch in str(value or "") if ch.isdigit() or ch == ".")


def _content_stamp(ds: Dataset) -> str:
    """ContentDate+ContentTime as a sortable stamp (when the image was made), or ''."""
    date = _digits(ds.get("ContentDate", ""))[:8]
    if len(date) != 8:
        return ""
    whole, _, fraction = _digits(ds.get("ContentTime", "")).partition(".")
    return date + whole.ljust(6, "0")[:6] + (f".{fraction}" if fraction else "")


def _acquired(ds: Dataset) -> tuple[str, str]:
    """(sortable acquisition date-time YYYYMMDDHHMMSS[.ffffff], which tags said it)."""
    stamp = _digits(ds.get("AcquisitionDateTime", "")).split("+")[0]
    if len(stamp) >= 8:
        return stamp[:21], "AcquisitionDateTime"
    for date_kw, time_kw in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        date = _digits(ds.get(date_kw, ""))[:8]
        if len(date) == 8:
            clock = _digits(ds.get(time_kw, ""))
            whole, _, fraction = clock.partition(".")
            stamp = date + whole.ljust(6, "0")[:6] + (f".{fraction}" if fraction else "")
            return stamp, f"{date_kw}+{time_kw}"
    return "", ""


def _synthesized(ds: Dataset) -> str:
    """Why this image is a synthesized 2D (generated from tomosynthesis), or ''."""
    types = {str(v).strip().upper() for v in ds.get("ImageType", [])}
    if found := sorted(types & _SYNTH_IMAGE_TYPES):
        return f"ImageType {found[0]}"
    for item in ds.get("SourceImageSequence", []):
        if str(item.get("ReferencedSOPClassUID", "")) in _TOMO_CLASSES:
            return "SourceImageSequence references a tomosynthesis object"
    for keyword in ("SeriesDescription", "ProtocolName", "AcquisitionDeviceProcessingDescription"):
        if match := _SYNTH_TEXT.search(_text(ds, keyword)):
            return f"{keyword} {match.group(0)!r}"
    return ""


def _rejection_title(ds: Dataset) -> str:
    for item in ds.get("ConceptNameCodeSequence", [])[:1]:
        code = str(item.get("CodeValue", "")).strip()
        if code in REJECTION_TITLES:
            return f"{code} {REJECTION_TITLES[code]}"
    return ""


def _referenced_instances(ds: Dataset) -> list[str]:
    """SOP Instance UIDs a KOS lists (evidence sequences and IMAGE content items)."""
    found: list[str] = []
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "IdenticalDocumentsSequence"):
        for study in ds.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                for ref in series.get("ReferencedSOPSequence", []):
                    found.append(str(ref.get("ReferencedSOPInstanceUID", "")))
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        for ref in item.get("ReferencedSOPSequence", []):
            found.append(str(ref.get("ReferencedSOPInstanceUID", "")))
        stack.extend(item.get("ContentSequence", []))
    return sorted({uid for uid in found if uid})


def selection_facts(ds: Dataset) -> dict[str, Any]:
    """Facts ``resolve`` weighs against the study's other objects (stored as JSON)."""
    acquired, acquired_source = _acquired(ds)
    facts: dict[str, Any] = {
        "acquired": acquired,
        "acquired_source": acquired_source,
        "content": _content_stamp(ds),
        "identity": {
            "patient_id": _text(ds, "PatientID").strip(),
            "issuer": _text(ds, "IssuerOfPatientID").strip(),
            "name": _text(ds, "PatientName").strip(),
            "birth_date": _text(ds, "PatientBirthDate").strip(),
        },
    }
    if synthesized := _synthesized(ds):
        facts["synthesized_2d"] = synthesized
    if _text(ds, "BreastImplantPresent").strip().upper() == "YES":
        facts["implant"] = True
    if title := _rejection_title(ds):
        facts["rejection"] = title
        facts["rejects"] = _referenced_instances(ds)
    return facts


# --- the exam as a whole ----------------------------------------------------------------
@dataclass(frozen=True)
class ImageFacts:
    """The stored facts about one received object that ``resolve`` needs."""

    sop_instance_uid: str
    slot: Slot | None
    for_processing: bool
    rule: NotScoredReason | None
    rule_detail: str
    pixel_check: PixelCheck
    pixel_detail: str = ""
    kind: ObjectKind = ObjectKind.IMAGE
    instance_number: int | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def acquired(self) -> str:
        return str(self.facts.get("acquired", ""))

    @property
    def acquisition_date(self) -> str:
        return self.acquired[:8]


@dataclass(frozen=True)
class NotScored:
    sop_instance_uid: str
    reason: NotScoredReason
    detail: str


@dataclass(frozen=True)
class ObjectDecision:
    """The role one object plays in its exam and the rule that gave it that role."""

    sop_instance_uid: str
    role: ObjectRole
    rule: str  # a NotScoredReason value, or the selection rule that chose it
    detail: str


@dataclass
class Resolution:
    slots: dict[Slot, str | None]
    not_scored: list[NotScored] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # pixel check not done yet
    roles: dict[str, ObjectDecision] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a result must say (synthesized 2D...)
    identity_conflict: str = ""  # the study's objects disagree on the patient
    exam_date: str = ""  # acquisition date of the images selected (YYYYMMDD)

    @property
    def missing(self) -> list[Slot]:
        return [slot for slot in SLOTS if self.slots[slot] is None]

    @property
    def complete_breasts(self) -> list[Laterality]:
        return [lat for lat in Laterality if all(self.slots[Slot(lat, view)] for view in View)]

    @property
    def absent_breasts(self) -> list[Laterality]:
        """Breasts with no scorable view at all (mastectomy, or simply not sent)."""
        return [lat for lat in Laterality if not any(self.slots[Slot(lat, view)] for view in View)]

    def scored_slots(self) -> dict[Slot, str]:
        """The slots a result is computed from: those of complete breasts."""
        complete = set(self.complete_breasts)
        return {
            slot: uid for slot, uid in self.slots.items() if uid and slot.laterality in complete
        }

    def _set(self, uid: str, role: ObjectRole, rule: str, detail: str) -> None:
        self.roles[uid] = ObjectDecision(uid, role, rule, detail)

    def _keep_out(self, uid: str, role: ObjectRole, reason: NotScoredReason, detail: str) -> None:
        self._set(uid, role, reason.value, detail)
        self.not_scored.append(NotScored(uid, reason, detail))


def _identity_conflict(objects: Sequence[ImageFacts]) -> str:
    """Which identity attributes the study's objects disagree on (names never printed)."""
    fields = {
        "patient_id": "PatientID",
        "issuer": "IssuerOfPatientID",
        "birth_date": "PatientBirthDate",
        "name": "PatientName",
    }
    differing = []
    for key, keyword in fields.items():
        values = set()
        for obj in objects:
            value = str((obj.facts.get("identity") or {}).get(key, "")).strip()
            if key == "name":  # the alphabetic group; ideographic / phonetic ones may be absent
                value = re.sub(r"[\s^]+", " ", value.split("=")[0]).strip().upper()
            if value:
                values.add(value)
        if len(values) > 1:
            differing.append(f"{keyword} ({len(values)} values)")
    if not differing:
        return ""
    return "the study's objects disagree on the patient: " + ", ".join(differing)


def _latest(found: list[ImageFacts]) -> tuple[ImageFacts | None, str]:
    """The latest acquisition among technical repeats of one view, and the rule used.

    Tried in order, each only when every candidate has a value and the latest is unique:
    the acquisition time (AcquisitionDateTime, else AcquisitionDate+Time, else
    ContentDate+Time), ContentDate+ContentTime, then InstanceNumber. When none decides the
    slot stays empty, and says so.
    """
    tiers: list[tuple[str, Any]] = [
        ("", lambda i: i.acquired or None),
        ("ContentDate+ContentTime", lambda i: str(i.facts.get("content", "")) or None),
        ("InstanceNumber", lambda i: i.instance_number),
    ]
    for name, key in tiers:
        values = [key(i) for i in found]
        if any(v is None for v in values):
            continue
        ordered = sorted(found, key=key)
        if key(ordered[-1]) != key(ordered[-2]):
            if not name:
                name = str(ordered[-1].facts.get("acquired_source", "acquisition time"))
            return ordered[-1], ("highest " if name == "InstanceNumber" else "latest ") + name
    return None, ""


def resolve(images: Iterable[ImageFacts]) -> Resolution:
    """Give every object of a study its role; at most one image per slot, with its reason."""
    objects = list(images)
    resolution = Resolution(slots=dict.fromkeys(SLOTS))
    resolution.identity_conflict = _identity_conflict(objects)
    rejected: dict[str, str] = {}
    for obj in objects:
        if obj.kind is ObjectKind.REJECTION_NOTE:
            for uid in obj.facts.get("rejects", []):
                rejected.setdefault(
                    uid, f"{obj.facts.get('rejection')} (KOS {obj.sop_instance_uid})"
                )
    candidates: list[ImageFacts] = []
    for obj in objects:
        uid = obj.sop_instance_uid
        if uid in rejected:
            resolution._keep_out(
                uid,
                ObjectRole.REJECTED,
                NotScoredReason.REJECTED,
                f"withdrawn by an IOCM rejection note: {rejected[uid]}",
            )
        elif obj.kind is ObjectKind.REJECTION_NOTE:
            listed = len(obj.facts.get("rejects", []))
            resolution._set(
                uid,
                ObjectRole.REJECTION_NOTE,
                "iocm_rejection",
                f"{obj.facts.get('rejection')}: withdraws {listed} object(s)",
            )
        elif obj.kind is ObjectKind.COMPANION:
            resolution._set(
                uid,
                ObjectRole.COMPANION,
                "not_an_image",
                obj.rule_detail or "filed with the exam; not an image",
            )
        elif obj.kind is ObjectKind.OUTPUT:
            resolution._set(uid, ObjectRole.OUTPUT, "output", "written by this node")
        elif obj.rule is not None:
            resolution._keep_out(uid, ObjectRole.NOT_SCORED, obj.rule, obj.rule_detail)
        elif obj.pixel_check == PixelCheck.FAILED:
            resolution._keep_out(
                uid, ObjectRole.NOT_SCORED, NotScoredReason.UNDECODABLE, obj.pixel_detail
            )
        elif obj.slot is not None:
            candidates.append(obj)
    candidates = _latest_exam_only(candidates, resolution)
    presentation_slots = {i.slot for i in candidates if not i.for_processing}
    by_slot: dict[Slot, list[ImageFacts]] = {slot: [] for slot in SLOTS}
    for image in candidates:
        assert image.slot is not None
        if image.for_processing:
            twin = image.slot in presentation_slots
            resolution._keep_out(
                image.sop_instance_uid,
                ObjectRole.FOR_PROCESSING,
                NotScoredReason.FOR_PROCESSING_TWIN
                if twin
                else NotScoredReason.FOR_PROCESSING_ONLY,
                "a For Presentation image of this view is scored instead"
                if twin
                else "For Processing (raw) image; the model reads For Presentation images",
            )
        else:
            by_slot[image.slot].append(image)
    for slot, found in by_slot.items():
        chosen = _choose(slot, found, resolution)
        if chosen is not None:
            resolution.slots[slot] = chosen.sop_instance_uid
            if chosen.pixel_check != PixelCheck.OK:
                resolution.pending.append(chosen.sop_instance_uid)
            if chosen.facts.get("implant"):
                resolution.notes.append(
                    f"{slot}: BreastImplantPresent YES (implant in the image; the score of an "
                    "implant view is less reliable)"
                )
    _mark_unpaired(resolution)
    return resolution


def _latest_exam_only(candidates: list[ImageFacts], resolution: Resolution) -> list[ImageFacts]:
    """A study holding more than one exam (a prior merged in, a later work-up): the images of
    the latest acquisition date are this exam; the earlier dates' images are filed as priors."""
    dates = sorted({i.acquisition_date for i in candidates if i.acquisition_date})
    if dates:
        resolution.exam_date = dates[-1]
    if len(dates) < 2:
        return candidates
    latest = dates[-1]
    kept = []
    for image in candidates:
        if image.acquisition_date and image.acquisition_date != latest:
            resolution._keep_out(
                image.sop_instance_uid,
                ObjectRole.PRIOR,
                NotScoredReason.EARLIER_EXAM,
                f"acquired {image.acquisition_date}; the study holds images of "
                f"{len(dates)} dates ({', '.join(dates)}): the latest date's images are this "
                "exam (rule: latest acquisition date)",
            )
        else:
            kept.append(image)
    return kept


def _choose(slot: Slot, found: list[ImageFacts], resolution: Resolution) -> ImageFacts | None:
    """One image for one slot: FFDM over synthesized 2D, then the latest acquisition."""
    if not found:
        return None
    ffdm = [i for i in found if not i.facts.get("synthesized_2d")]
    if ffdm and len(ffdm) < len(found):
        for image in found:
            if image.facts.get("synthesized_2d"):
                resolution._keep_out(
                    image.sop_instance_uid,
                    ObjectRole.SYNTHESIZED_2D,
                    NotScoredReason.SYNTHESIZED_BESIDE_FFDM,
                    f"synthesized 2D ({image.facts['synthesized_2d']}); the full-field digital "
                    "image of this view is scored",
                )
        found = ffdm
    rule = "the only candidate"
    if len(found) > 1:
        chosen, rule = _latest(found)
        if chosen is None:
            uids = ", ".join(sorted(i.sop_instance_uid for i in found))
            for image in found:
                resolution._keep_out(
                    image.sop_instance_uid,
                    ObjectRole.NOT_SCORED,
                    NotScoredReason.DUPLICATE_SLOT,
                    f"{len(found)} candidate images for {slot} and no acquisition time or "
                    f"InstanceNumber tells which is the latest: {uids}",
                )
            return None
        for image in found:
            if image is not chosen:
                resolution._keep_out(
                    image.sop_instance_uid,
                    ObjectRole.REPEAT,
                    NotScoredReason.REPEAT,
                    f"technical repeat: {chosen.sop_instance_uid} is a later acquisition of "
                    f"{slot} ({rule})",
                )
    else:
        chosen = found[0]
    if chosen.facts.get("synthesized_2d"):
        rule += "; synthesized 2D, no full-field digital image of this view"
        resolution.notes.append(
            f"{slot}: synthesized 2D scored ({chosen.facts['synthesized_2d']}): no full-field "
            "digital image of this view was received"
        )
    role = ObjectRole.SCORED if chosen.pixel_check == PixelCheck.OK else ObjectRole.CANDIDATE
    resolution._set(chosen.sop_instance_uid, role, "selected", f"fills {slot}: {rule}")
    return chosen


def _mark_unpaired(resolution: Resolution) -> None:
    """A view of a breast whose other view is missing is not scored; say so on it."""
    for slot, uid in resolution.slots.items():
        if uid is None:
            continue
        other = Slot(slot.laterality, View.MLO if slot.view is View.CC else View.CC)
        if resolution.slots[other] is None:
            chosen = resolution.roles[uid].detail
            resolution.roles[uid] = ObjectDecision(
                uid,
                ObjectRole.UNPAIRED,
                NotScoredReason.UNPAIRED_VIEW.value,
                f"{chosen}; but {other} is missing: a breast is scored from both views",
            )


@dataclass(frozen=True)
class Decision:
    state: ExamState
    reason: str
    missing: tuple[str, ...] = ()


def study_age_days(study_date: str, now: dt.datetime) -> int | None:
    """Days between a DICOM date (YYYYMMDD) and ``now``; None when the date is unreadable."""
    try:
        day = dt.datetime.strptime(_digits(study_date)[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return (now.date() - day).days


def decide(
    resolution: Resolution,
    *,
    last_received_at: dt.datetime,
    now: dt.datetime,
    quiet_seconds: float,
    stable_seconds: float,
    study_date: str = "",
    prior_after_days: int = 0,
) -> Decision | None:
    """Next state of a RECEIVING exam, or None while it should keep waiting.

    HELD: the objects disagree on the patient. PRIOR: the study is older than
    ``prior_after_days`` (0 = never). READY: four slots filled and no image for
    ``quiet_seconds``; or, after ``stable_seconds``, one complete breast while the other
    breast has no image at all (one-breast exams are real). PARTIAL: idle for
    ``stable_seconds`` with views missing (it names them).
    """
    idle = (now - last_received_at).total_seconds()
    missing = tuple(str(slot) for slot in resolution.missing)
    if idle < min(quiet_seconds, stable_seconds):
        return None
    if resolution.identity_conflict:
        return Decision(ExamState.HELD, f"held, not scored: {resolution.identity_conflict}")
    age = study_age_days(study_date or resolution.exam_date, now)
    if prior_after_days > 0 and age is not None and age > prior_after_days:
        return Decision(
            ExamState.PRIOR,
            f"prior: study date {study_date or resolution.exam_date} is {age} days old "
            f"(prior_after_days={prior_after_days}); filed, not scored automatically "
            "(`mammo-node exams rescore` scores it)",
            missing,
        )
    if resolution.pending:
        return None  # pixel checks decide whether a slot is really filled
    if not missing and idle >= quiet_seconds:
        return Decision(ExamState.READY, "4 views received")
    if missing and idle >= stable_seconds:
        complete = resolution.complete_breasts
        absent = resolution.absent_breasts
        if len(complete) == 1 and len(absent) == 1:
            return Decision(
                ExamState.READY,
                f"one breast: {complete[0].value} has both views; no image of breast "
                f"{absent[0].value} was received (scored as a one-breast exam)",
                missing,
            )
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
