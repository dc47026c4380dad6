"""What to generate (SynthOptions) and what comes back (SynthExam, LesionTruth, identities)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from mammo_node.domain import Slot
from mammo_node.errors import MammoNodeError

FULL_SIZE_LARGE: tuple[int, int] = (4096, 3328)  # rows x columns, 70 um (24 x 29 cm detector)
FULL_SIZE_SMALL: tuple[int, int] = (2294, 1914)  # rows x columns, 100 um (19 x 23 cm detector)
OUTCOMES: tuple[str, ...] = ("screening", "interval", "normal")
MALIGNANT_KINDS: frozenset[str] = frozenset(
    {"mass", "spiculated_mass", "calcification_cluster", "subtle_mass"}
)


class SynthError(MammoNodeError, ValueError):
    """Invalid synthesis options or arguments."""


@dataclass(frozen=True)
class LesionTruth:
    """One finding in one stored image: centre (x=column, y=row) and radius in pixels."""

    sop_instance_uid: str
    study_uid: str
    patient_id: str
    slot: str
    x: float
    y: float
    radius: float
    kind: str

    @property
    def malignant(self) -> bool:
        return self.kind in MALIGNANT_KINDS or self.kind.endswith("_malignant")


@dataclass(frozen=True)
class SynthOptions:
    """What to generate. Sizes are free; see FULL_SIZE_LARGE / FULL_SIZE_SMALL for benchmarks.

    ``lesion_contrast`` is the peak added attenuation of a mass on a 0..1 display scale where
    fat is ~0.3 and dense tissue ~0.7; ``interval_contrast_factor`` scales it for interval
    cancers (half of which show nothing at all).
    """

    rows: int = 512
    columns: int = 416
    seed: int = 0
    exams: int = 10
    screening_fraction: float = 0.3
    interval_fraction: float = 0.1
    monochrome1_fraction: float = 0.2
    lesion_contrast: float = 0.25
    lesion_radius_mm: tuple[float, float] = (6.0, 12.0)
    interval_contrast_factor: float = 0.15
    interval_visible_fraction: float = 0.5
    spiculated_fraction: float = 0.35
    calcification_only_fraction: float = 0.0
    benign_fraction: float = 0.1
    repeat_patient_fraction: float = 0.2
    bits_stored: tuple[int, ...] = (12, 13, 14)
    detector_width_mm: float | None = None  # None: 191.4 for FULL_SIZE_SMALL, else 233.0
    # site-traffic habits (mammo_node.synth.habits.HABITS) applied to every exam written, and
    # whether the exams are dated today (else 2018-2021, which a node files as priors)
    habits: tuple[str, ...] = ()
    recent: bool = False

    def __post_init__(self) -> None:
        if self.rows < 64 or self.columns < 64:
            raise SynthError(
                f'Arguments "rows" and "columns" should be at least 64; got '
                f"{self.rows} x {self.columns}."
            )
        if self.exams < 0:
            raise SynthError(f'Argument "exams" should be >= 0; got {self.exams}.')
        for name in (
            "screening_fraction",
            "interval_fraction",
            "monochrome1_fraction",
            "interval_visible_fraction",
            "spiculated_fraction",
            "calcification_only_fraction",
            "benign_fraction",
            "repeat_patient_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SynthError(f'Argument "{name}" should be within 0..1; got {value}.')
        if self.screening_fraction + self.interval_fraction > 1.0:
            raise SynthError(
                'Arguments "screening_fraction" + "interval_fraction" should not exceed 1; got '
                f"{self.screening_fraction} + {self.interval_fraction}."
            )
        low, high = self.lesion_radius_mm
        if not 0.5 <= low <= high:
            raise SynthError(
                f'Argument "lesion_radius_mm" should be (low, high) with 0.5 <= low <= high; '
                f"got {self.lesion_radius_mm}."
            )
        if not 0.0 < self.lesion_contrast <= 1.0:
            raise SynthError(
                f'Argument "lesion_contrast" should be within (0, 1]; got {self.lesion_contrast}.'
            )
        if not self.bits_stored or any(b not in (12, 13, 14, 15, 16) for b in self.bits_stored):
            raise SynthError(
                f'Argument "bits_stored" should hold values in 12..16; got {self.bits_stored}.'
            )

    @property
    def pixel_spacing_mm(self) -> float:
        width = self.detector_width_mm
        if width is None:
            width = 191.4 if (self.rows, self.columns) == FULL_SIZE_SMALL else 232.96
        return width / self.columns


@dataclass
class SynthExam:
    patient_id: str
    study_uid: str
    outcome: str
    cancer_laterality: str  # "L", "R" or "" for normal exams
    datasets: dict[Slot, Dataset]
    truth: list[LesionTruth]
    study_date: str = ""
    reader_scores: dict[str, int] = field(default_factory=dict)  # reader1_L ... reader2_R
    density: str = ""  # BI-RADS a..d


@dataclass(frozen=True)
class PatientIdentity:
    patient_id: str
    name: str
    birth_date: str  # YYYYMMDD


@dataclass(frozen=True)
class StudyIdentity:
    study_uid: str
    date: str  # YYYYMMDD
    time: str  # HHMMSS
    accession: str
    study_id: str = "1"
    description: str = "Screening mammography"
