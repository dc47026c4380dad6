"""Pure domain types shared by every layer: views, slots, exam states and results.

No I/O here. Strings from DICOM or the command line become these enums at the boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

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


class Origin(enum.StrEnum):
    """Where an instance came from."""

    RECEIVED = "received"  # C-STORE or STOW-RS from outside
    GENERATED = "generated"  # written by this node (SR, SC, SEG)


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


@dataclass
class ViewInference:
    """Model output for one view, with coordinates in the source image's stored pixel grid.

    ``coa`` is (x=column, y=row); ``roi`` is (x0, y0, x1, y1) with x1/y1 exclusive.
    ``saliency`` is float32 (Rows, Columns) in the stored grid, scaled to 0..1.
    """

    sop_instance_uid: str
    slot: Slot
    holistic: float
    attention: float
    ensemble: float
    coa: tuple[float, float]
    roi: tuple[int, int, int, int]
    saliency: np.ndarray = field(repr=False)
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

    def to_json(self) -> dict[str, Any]:
        """The result as ``exams show --json`` prints it (without saliency maps)."""
        return {
            "exam_score": self.scores.exam_score,
            "breast_scores": {lat.value: s for lat, s in self.scores.breast_scores.items()},
            "images": {
                v.sop_instance_uid: {
                    "slot": str(v.slot),
                    "holistic": v.holistic,
                    "attention": v.attention,
                    "ensemble": v.ensemble,
                    "coa": [v.coa[0], v.coa[1]],
                    "roi": list(v.roi),
                }
                for v in self.views.values()
            },
            "model": {"name": self.bundle.name, "version": self.bundle.version},
            "verdicts": dict(self.verdicts),
            "timings": dict(self.timings),
        }
