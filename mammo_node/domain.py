"""Pure domain types shared by every layer: views, slots, exam states and results.

No I/O here. Strings from DICOM or the command line become these enums at the boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Laterality(enum.StrEnum):
    L = "L"
    R = "R"


class View(enum.StrEnum):
    CC = "CC"
    MLO = "MLO"


@dataclass(frozen=True, order=True)
class Slot:
    """One of the four screening views: laterality x view."""

    laterality: Laterality
    view: View

    def __str__(self) -> str:
        return f"{self.laterality.value}-{self.view.value}"

    @classmethod
    def parse(cls, text: str) -> Slot:
        """Parse ``"L-CC"`` style text."""
        try:
            lat, view = text.strip().upper().split("-")
            return cls(Laterality(lat), View(view))
        except ValueError:
            raise ValueError(
                f'Slot "{text}" is not one of {", ".join(str(s) for s in SLOTS)}.'
            ) from None


SLOTS: tuple[Slot, ...] = (
    Slot(Laterality.L, View.CC),
    Slot(Laterality.L, View.MLO),
    Slot(Laterality.R, View.CC),
    Slot(Laterality.R, View.MLO),
)


class ExamState(enum.StrEnum):
    """Life of an exam. Every change is a row, so a restart resumes where it stopped."""

    RECEIVING = "receiving"  # images arriving, not yet stable
    READY = "ready"  # four slots filled and quiet: waiting for a worker
    PARTIAL = "partial"  # stable with slots missing: not scored, says which
    SCORING = "scoring"  # claimed by a worker
    SCORED = "scored"  # result written
    FAILED = "failed"  # parked after repeated failures, with its error
    PRIOR = "prior"  # an old study (PACS prefetch): filed, listed, scored only on request
    HELD = "held"  # its objects disagree on the patient: not scored until resolved


class Origin(enum.StrEnum):
    """Where an instance came from."""

    RECEIVED = "received"  # C-STORE or STOW-RS from outside
    GENERATED = "generated"  # written by this node (SR, SC, SEG)


class IngestOutcome(enum.StrEnum):
    """What filing an instance did."""

    STORED = "stored"  # a new SOP instance
    DUPLICATE = "duplicate"  # the same UID with the same bytes: nothing changed
    REPLACED = "replaced"  # the same UID with other bytes: the new file replaced the old
    RESTORED = "restored"  # the same bytes again after retention deleted the file: back on file
    CONFLICT = "conflict"  # the same UID with other bytes, not allowed: kept aside, refused


class OverwritePolicy(enum.StrEnum):
    """What an instance with an acknowledged SOP Instance UID and other bytes may do
    (dcm4chee's overwrite policies, Orthanc's OverwriteInstances)."""

    NEVER = "never"  # the first acknowledged bytes stay; the newcomer is kept aside, refused
    SAME_SOURCE = "same-source"  # the same calling AE from the same host may correct its own
    ALWAYS = "always"  # the newest bytes replace the stored ones


class ObjectKind(enum.StrEnum):
    """What a received object is, for selection."""

    IMAGE = "image"  # an image SOP class that can fill a slot
    TOMOSYNTHESIS = "tomosynthesis"  # breast tomosynthesis / projection objects
    REJECTION_NOTE = "rejection_note"  # IOCM KOS that withdraws images
    COMPANION = "companion"  # dose SR, GSPS, KOS, CAD SR, PDF, waveforms...
    OUTPUT = "output"  # written by this node


class ObjectRole(enum.StrEnum):
    """The part an object of a study plays in its exam's result, as `exams show` lists it."""

    SCORED = "scored"  # fills a slot
    CANDIDATE = "candidate"  # fills a slot; its pixels are still being checked
    REPEAT = "repeat"  # an earlier acquisition of a view that a later one replaces
    SYNTHESIZED_2D = "synthesized_2d"  # synthesized 2D beside a full-field digital image
    FOR_PROCESSING = "for_processing"  # raw image
    REJECTED = "rejected"  # withdrawn by an IOCM rejection note
    PRIOR = "prior"  # images of another (earlier) exam held in the same study
    NOT_SCORED = "not_scored"  # kept out by its own tags or pixels (the rule says which)
    UNPAIRED = "unpaired"  # one view of a breast whose other view is missing
    COMPANION = "companion"  # not an image: dose SR, GSPS, KOS, CAD SR...
    REJECTION_NOTE = "rejection_note"
    OUTPUT = "output"  # this node's SR, SC, SEG
    CONFLICT = "conflict"  # other bytes under an acknowledged UID, kept aside


class PixelCheck(enum.StrEnum):
    """Whether an instance's pixels were found readable (uncompressed: length; else decoded)."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not a candidate for scoring: nothing to check


class OutboxState(enum.StrEnum):
    """A delivery of one output object to one destination."""

    PENDING = "pending"  # due now or after its backoff
    DELIVERED = "delivered"  # the peer stored it (success or a storage warning)
    DEAD = "dead"  # given up after the attempts; `mammo-node outbox retry` re-queues it


class NotScoredReason(enum.StrEnum):
    """Rules that keep an acknowledged image out of scoring. Each image records one."""

    TOMOSYNTHESIS = "tomosynthesis"
    FOR_PROCESSING_TWIN = "for_processing_twin"
    FOR_PROCESSING_ONLY = "for_processing_only"
    NON_SCREENING_VIEW = "non_screening_view"  # spot, magnification, implant displaced, ML...
    UNKNOWN_LATERALITY = "unknown_laterality"
    UNKNOWN_VIEW = "unknown_view"
    UNDECODABLE = "undecodable"
    DUPLICATE_SLOT = "duplicate_slot"  # more than one candidate for one slot
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_PIXELS = "unsupported_pixels"  # colour, multi-frame...
    PARTIAL_VIEW = "partial_view"  # PartialView YES: one tile of a mosaic
    REPEAT = "repeat"  # a later acquisition of the view is scored
    SYNTHESIZED_BESIDE_FFDM = "synthesized_beside_ffdm"
    REJECTED = "rejected"  # IOCM rejection note
    EARLIER_EXAM = "earlier_exam"  # another acquisition date in the same study
    UNPAIRED_VIEW = "unpaired_view"  # its breast lacks the other view


@dataclass(frozen=True)
class OperatingPoint:
    """A score threshold chosen at a target sensitivity on cross-validated data."""

    name: str  # e.g. "recall" - used in the verdict text
    threshold: float  # exam score at or above which the verdict applies
    sensitivity: float | None = None
    specificity: float | None = None


@dataclass(frozen=True)
class BundleInfo:
    """What every output says about the model that made it."""

    name: str
    version: str
    architecture: str
    is_demo: bool
    score_kind: str  # "logit_difference" (uncalibrated) or "probability" (calibrated, 0..1)
    device_uid: str  # device observer UID; changes per model release
    operating_points: tuple[OperatingPoint, ...] = ()
    manifest_sha256: str = ""

    @property
    def label(self) -> str:
        demo = " (DEMO - not for clinical use)" if self.is_demo else ""
        return f"{self.name} {self.version}{demo}"


@dataclass(frozen=True)
class SaliencyMap:
    """A view's saliency map as the model made it, 0..1, on a grid that covers the whole
    stored image in the stored orientation (the scorer's: the model's rescaled grid with the
    flip undone and zeros outside the model's window; any other grid over the same image,
    the stored grid itself included, is as good).

    ``values`` is float32 (h, w); ``stored_shape`` the source's (Rows, Columns). Both grids
    span the same image edge to edge: a stored pixel centre (x, y) lies at map position
    ((x + 0.5) * w / Columns - 0.5, (y + 0.5) * h / Rows - 0.5). Each output resamples it
    once to its own grid (:mod:`mammo_node.writers.saliency_grid`), so the full-size map is never
    made unless an output is drawn at full size.
    """

    values: np.ndarray = field(repr=False)
    stored_shape: tuple[int, int]

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 2 or 0 in values.shape:
            raise ValueError(
                f'Argument "values" should be a non-empty 2-D map, got shape {values.shape}.'
            )
        rows, columns = self.stored_shape
        if rows < 1 or columns < 1:
            raise ValueError(
                f'Argument "stored_shape" should be positive, got {self.stored_shape}.'
            )
        object.__setattr__(self, "values", values.astype(np.float32, copy=False))
        object.__setattr__(self, "stored_shape", (int(rows), int(columns)))

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the map's own grid."""
        return self.values.shape  # type: ignore[return-value]


@dataclass
class ViewInference:
    """Model output for one view, with coordinates in the source image's stored pixel grid.

    ``coa`` is (x=column, y=row); ``roi`` is (x0, y0, x1, y1) with x1/y1 exclusive.
    ``saliency`` is the view's :class:`SaliencyMap` (peak 1 unless the map is all zero).
    """

    sop_instance_uid: str
    slot: Slot
    holistic: float
    attention: float
    ensemble: float
    coa: tuple[float, float]
    roi: tuple[int, int, int, int]
    saliency: SaliencyMap = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ExamScores:
    """Breast and exam scores from view scores (see ``mammo_node.ml.scoring``)."""

    breast_scores: dict[Laterality, float]
    exam_score: float


@dataclass
class ExamInference:
    """Everything the worker hands to the writers for one exam."""

    study_uid: str
    views: dict[Slot, ViewInference]
    scores: ExamScores
    bundle: BundleInfo
    timings: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, bool] = field(default_factory=dict)  # operating point name -> at/above
    # from the bundle's calibration when it has one (the trainer makes it); None otherwise
    probability: float | None = None  # calibrated probability of cancer, 0..1
    category: int | None = None  # 1..10 reading-room category
