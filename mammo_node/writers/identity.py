"""What identifies each output: kinds, deterministic UIDs, series numbers and descriptions.

Every UID of an output is a name-based UUID (RFC 4122 version 5, SHA-1) under ``2.25``, made
from (source study, bundle content, result revision, output kind, view, element). Building the
same result twice - a retry after a crash - therefore gives byte-for-byte the same identities,
and the PACS receives the same instances again instead of duplicates. A new revision (late image,
rescore) or a bundle with other content gives new UIDs. The bundle's content is its manifest's
sha256 (the manifest lists the sha256 of every weights file): two bundles with the same version
string but other weights never share output UIDs, and renaming a version changes nothing.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from functools import partial

from pydicom.uid import (
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    MammographyCADSRStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

from mammo_node.domain import SLOTS, BundleInfo, Slot

# Fixed namespace for mammo-node outputs (a random UUID drawn once; never change it).
_NAMESPACE = uuid.UUID("6f0c64b6-2f0e-4c1c-9a43-6a2e7d0c1b55")


class OutputKind(enum.StrEnum):
    """The objects a scored exam produces. ``SR`` is the primary, exam-level report."""

    SR = "sr"  # exam report (TID 1500): the one named by sr_sop_instance_uid
    SR_VIEW = "sr_view"  # one TID 1500 report per view, so every view displays in OHIF
    SC = "sc"  # RGB secondary capture with heat map, ROI box, COA and scores burned in
    SEG = "seg"  # binary segmentation of the most salient pixels
    CAD_SR = "cad_sr"  # Mammography CAD SR (TID 4000) for breast workstations
    GSPS = "gsps"  # Grayscale Softcopy Presentation State: marks on the original images
    KOS = "kos"  # IOCM rejection note withdrawing a replaced result's SC / SEG / GSPS


# What a destination can ask for (``destinations add --outputs``) and the objects each means.
DESTINATION_OUTPUT_KINDS: dict[str, tuple[OutputKind, ...]] = {
    "tid1500": (OutputKind.SR, OutputKind.SR_VIEW),
    "sc": (OutputKind.SC,),
    "seg": (OutputKind.SEG,),
    "cad-sr": (OutputKind.CAD_SR,),
    "gsps": (OutputKind.GSPS,),
}
DEFAULT_DESTINATION_OUTPUTS = "tid1500,sc,seg"  # what every destination received before


def parse_destination_outputs(text: str) -> list[str]:
    """``"cad-sr, gsps"`` -> ``["cad-sr", "gsps"]`` (known kinds, no repeats, not empty)."""
    kinds: list[str] = []
    for part in text.split(","):
        kind = part.strip().lower()
        if not kind:
            continue
        if kind not in DESTINATION_OUTPUT_KINDS:
            raise ValueError(
                f"Unknown output kind {kind!r}; choose from {', '.join(DESTINATION_OUTPUT_KINDS)}."
            )
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise ValueError(
            f"A destination needs at least one output kind ({', '.join(DESTINATION_OUTPUT_KINDS)})."
        )
    return kinds


# a rejection note goes wherever the objects it withdraws went
_WITHDRAWABLE = {OutputKind.SC.value, OutputKind.SEG.value, OutputKind.GSPS.value}


def output_kinds_for(destination_outputs: str) -> set[str]:
    """The ``OutputKind`` values a destination with these outputs receives."""
    kinds = {
        k.value
        for kind in parse_destination_outputs(destination_outputs)
        for k in DESTINATION_OUTPUT_KINDS[kind]
    }
    if kinds & _WITHDRAWABLE:
        kinds.add(OutputKind.KOS.value)
    return kinds


class UidElement(enum.StrEnum):
    SERIES = "series"
    INSTANCE = "instance"


# Fixed, high series numbers per output type (per view: base + 1..4 in SLOTS order).
SERIES_NUMBER_BASE: dict[OutputKind, int] = {
    OutputKind.SR: 9100,
    OutputKind.SR_VIEW: 9100,
    OutputKind.SC: 9200,
    OutputKind.SEG: 9300,
    OutputKind.CAD_SR: 9400,
    OutputKind.GSPS: 9500,
    OutputKind.KOS: 9600,
}

_KIND_WORDS: dict[OutputKind, str] = {
    OutputKind.SR: "exam report",
    OutputKind.SR_VIEW: "report",
    OutputKind.SC: "saliency images",
    OutputKind.SEG: "saliency SEG",
    OutputKind.CAD_SR: "mammography CAD SR",
    OutputKind.GSPS: "presentation state",
    OutputKind.KOS: "rejection note",
}


@dataclass(frozen=True)
class ReferencedDocument:
    """An SR written for an earlier revision of the same exam (goes to Predecessor Documents).

    ``slot`` is the view a per-view SR was written for, None for the exam report (or when not
    known: such a document is listed as a predecessor of every new SR).
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    slot: Slot | None = None


def bundle_key(bundle: BundleInfo) -> str:
    """What output UIDs are keyed on: the bundle's content hash (version if it has none)."""
    return f"sha256:{bundle.manifest_sha256}" if bundle.manifest_sha256 else bundle.version


def output_uid(
    study_uid: str,
    bundle_version: str,
    revision: int,
    kind: OutputKind | str,
    slot: Slot | None,
    element: UidElement | str = UidElement.INSTANCE,
) -> str:
    """Deterministic ``2.25.<int>`` UID of one output's series or instance."""
    if not study_uid:
        raise ValueError(f'Argument "study_uid" should be a UID, got {study_uid!r}.')
    if revision < 0:
        raise ValueError(f'Argument "revision" should be >= 0, got {revision!r}.')
    kind = OutputKind(kind)
    element = UidElement(element)
    name = "|".join(
        [study_uid, bundle_version, str(revision), kind.value, str(slot or "exam"), element.value]
    )
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def view_index(slot: Slot) -> int:
    """1-based position of a view in L-CC, L-MLO, R-CC, R-MLO order."""
    return SLOTS.index(slot) + 1


def series_number(kind: OutputKind, slot: Slot | None) -> int:
    base = SERIES_NUMBER_BASE[kind]
    if kind in (OutputKind.SR_VIEW, OutputKind.SEG):
        if slot is None:
            raise ValueError(f'Output kind "{kind}" needs a view, got slot None.')
        return base + view_index(slot)
    return base


def instance_number(slot: Slot | None) -> int:
    return 1 if slot is None else view_index(slot)


def series_description(
    kind: OutputKind, slot: Slot | None, bundle: BundleInfo, revision: int
) -> str:
    """E.g. ``"DEMO NOT FOR CLINICAL USE AI report L-CC r1"`` (at most 64 characters)."""
    words = _KIND_WORDS[kind] + (f" {slot}" if slot is not None else "")
    demo = "DEMO NOT FOR CLINICAL USE " if bundle.is_demo else ""
    text = f"{demo}AI {words} r{revision}"
    return text[:64]


SOP_CLASS: dict[OutputKind, str] = {
    OutputKind.SR: ComprehensiveSRStorage,
    OutputKind.SR_VIEW: ComprehensiveSRStorage,
    OutputKind.SC: SecondaryCaptureImageStorage,
    OutputKind.SEG: SegmentationStorage,
    OutputKind.CAD_SR: MammographyCADSRStorage,
    OutputKind.GSPS: GrayscaleSoftcopyPresentationStateStorage,
    OutputKind.KOS: KeyObjectSelectionDocumentStorage,
}


@dataclass(frozen=True)
class OutputIdentity:
    """Where one output goes: its series, instance and SOP class."""

    kind: OutputKind
    slot: Slot | None
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    series_number: int
    instance_number: int
    series_description: str

    def reference(self) -> tuple[str, str, str]:
        """(series UID, SOP class UID, SOP instance UID)."""
        return self.series_instance_uid, self.sop_class_uid, self.sop_instance_uid


def plan_identities(
    study_uid: str, bundle: BundleInfo, revision: int, slots: list[Slot], *, rejection: bool = False
) -> dict[tuple[OutputKind, Slot | None], OutputIdentity]:
    """Identities of every output of one result: the exam SR, then per view SR, SC, SEG."""
    wanted: list[tuple[OutputKind, Slot | None]] = [(OutputKind.SR, None)]
    for kind in (OutputKind.SR_VIEW, OutputKind.SC, OutputKind.SEG):
        wanted.extend((kind, slot) for slot in slots)
    wanted += [(OutputKind.CAD_SR, None), (OutputKind.GSPS, None)]
    if rejection:
        wanted.append((OutputKind.KOS, None))
    plan: dict[tuple[OutputKind, Slot | None], OutputIdentity] = {}
    for kind, slot in wanted:
        series_slot = None if kind is OutputKind.SC else slot  # one SC series for all views
        uid = partial(output_uid, study_uid, bundle_key(bundle), revision, kind)
        plan[kind, slot] = OutputIdentity(
            kind=kind,
            slot=slot,
            series_instance_uid=uid(series_slot, UidElement.SERIES),
            sop_instance_uid=uid(slot, UidElement.INSTANCE),
            sop_class_uid=SOP_CLASS[kind],
            series_number=series_number(kind, slot),
            instance_number=instance_number(slot),
            series_description=series_description(kind, series_slot, bundle, revision),
        )
    return plan


def cad_identity(
    study_uid: str, bundle: BundleInfo, revision: int, operating_point: str
) -> OutputIdentity:
    """The CAD SR for a destination that chose another operating point than the bundle's first:
    its own series and UIDs (the rendering intents differ), keyed on the operating point."""
    key = f"{bundle_key(bundle)}|op={operating_point}"
    uid = partial(output_uid, study_uid, key, revision, OutputKind.CAD_SR, None)
    description = series_description(OutputKind.CAD_SR, None, bundle, revision)
    return OutputIdentity(
        kind=OutputKind.CAD_SR,
        slot=None,
        series_instance_uid=uid(UidElement.SERIES),
        sop_instance_uid=uid(UidElement.INSTANCE),
        sop_class_uid=SOP_CLASS[OutputKind.CAD_SR],
        series_number=series_number(OutputKind.CAD_SR, None),
        instance_number=1,
        series_description=f"{description} {operating_point}"[:64],
    )


def tracking_uid(study_uid: str, bundle_version: str, revision: int, what: str) -> str:
    """Deterministic Tracking Unique Identifier of one finding (the same in every SR that has it).

    ``what`` names the finding, e.g. ``"L-CC region"`` or ``"exam score"``.
    """
    name = "|".join([study_uid, bundle_version, str(revision), what, "tracking"])
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"
