"""Synthetic screening exams with known lesions, written as MG For Presentation DICOM.

Each exam is the four screening views (L-CC, L-MLO, R-CC, R-MLO) of one woman, rendered from a
seeded breast phantom: a breast outline from the chest wall, a skin line and a smooth fall-off at
the edge, fibroglandular texture whose structures run towards the nipple, a pectoral muscle on
the MLO views and near-zero air around the breast. Screening cancers show one lesion in both
views of the affected breast (same distance from the nipple in CC and MLO); interval cancers
show at most a faint one; normals none (a few carry a benign nodule).

Images are rendered in a *canonical* frame with the chest wall at column 0 (as a left breast is
stored) and right breasts are mirrored, as a detector stores them, so the chest wall of a right
breast is at the last column. Every coordinate written to the ground truth is in the stored
pixel grid of the file as written: x = column, y = row, pixel centres at integers.

Everything is deterministic for a seed: the same options give the same pixels and UIDs. A
patient's anatomy depends only on the seed and the patient ID, so a woman's two exams look
alike (which is why cross-validation must group by patient).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from mammo_node import __version__
from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.errors import MammoNodeError

logger = logging.getLogger(__name__)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MANUFACTURER = "mammo-node synth"
FULL_SIZE_LARGE: tuple[int, int] = (4096, 3328)  # rows x columns, 70 um (24 x 29 cm detector)
FULL_SIZE_SMALL: tuple[int, int] = (2294, 1914)  # rows x columns, 100 um (19 x 23 cm detector)
OUTCOMES: tuple[str, ...] = ("screening", "interval", "normal")
MALIGNANT_KINDS: frozenset[str] = frozenset(
    {"mass", "spiculated_mass", "calcification_cluster", "subtle_mass"}
)
LABEL_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "study_uid",
    "outcome",
    "cancer_laterality",
    "reader1_L",
    "reader1_R",
    "reader2_L",
    "reader2_R",
    "study_date",
    "density",
)
TRUTH_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "study_uid",
    "patient_id",
    "slot",
    "x",
    "y",
    "radius",
    "kind",
)


def patient_orientation(
    laterality: Laterality, view: View, *, chest_wall_left: bool
) -> tuple[str, str]:
    """Patient Orientation (0020,0020) of a CC or MLO image: (row direction, column direction).

    The row direction points from the first to the last column: anterior (A) when the chest
    wall is at column 0, posterior (P) when it is at the last column. The column direction
    follows the usual convention (lateral side up on CC, axilla up on MLO): going down is
    medial on CC and foot + medial on MLO; the medial side of the left breast is the patient's
    right (R). Mirroring an image left-right flips only the row direction.
    """
    medial = "R" if laterality is Laterality.L else "L"
    return ("A" if chest_wall_left else "P", medial if view is View.CC else "F" + medial)


# As a detector stores them: left breasts with the chest wall at column 0, right breasts
# mirrored with the chest wall at the last column (L-CC A\R, L-MLO A\FR, R-CC P\L, R-MLO P\FL).
PATIENT_ORIENTATION: dict[Slot, tuple[str, str]] = {
    slot: patient_orientation(
        slot.laterality, slot.view, chest_wall_left=slot.laterality is Laterality.L
    )
    for slot in SLOTS
}
VIEW_CODES: dict[View, tuple[str, str]] = {
    View.CC: ("399162004", "cranio-caudal"),
    View.MLO: ("399368009", "medio-lateral oblique"),
}
_WORK_MAX = 1024  # the phantom is drawn at most this large, then upsampled
_TEXTURE = 512  # side of the periodic texture tiles


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


@dataclass
class SynthSummary:
    out_dir: Path
    exams: int
    images: int
    patients: int
    outcomes: dict[str, int]
    labels_csv: Path
    truth_csv: Path
    files: list[Path]
    seconds: float


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


# --------------------------------------------------------------------------- identifiers


def make_uid(*parts: object) -> str:
    """A valid DICOM UID (2.25 form, <= 44 characters) that depends only on ``parts``."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _seeded_rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class ExamPlan:
    """Who, when and what, decided before any pixel is drawn."""

    index: int
    patient_id: str
    outcome: str
    cancer_laterality: str
    study_date: dt.date
    photometric: str
    bits_stored: int


def plan_exams(options: SynthOptions) -> list[ExamPlan]:
    """Outcomes, patients (some with two exams, the earlier normal), dates and pixel formats."""
    rng = _seeded_rng("plan", options.seed)
    n = options.exams
    n_screen = round(n * options.screening_fraction)
    n_interval = min(round(n * options.interval_fraction), n - n_screen)
    outcomes = ["screening"] * n_screen + ["interval"] * n_interval
    outcomes += ["normal"] * (n - len(outcomes))
    rng.shuffle(outcomes)
    n_mono1 = round(n * options.monochrome1_fraction)
    mono1 = set(rng.permutation(n)[:n_mono1].tolist())

    first_of_pair, second_of = _pair_repeat_exams(outcomes, options.repeat_patient_fraction, rng)
    patient_of: dict[int, int] = {}
    dates: dict[int, dt.date] = {}
    next_patient = 0
    for i in range(n):
        if i in patient_of:
            continue
        patient_of[i] = next_patient
        dates[i] = dt.date(2018, 1, 2) + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
        if i in first_of_pair:
            later = second_of[i]
            patient_of[later] = next_patient
            dates[later] = dates[i] + dt.timedelta(days=int(rng.integers(700, 760)))
        next_patient += 1
    plans = []
    for i, outcome in enumerate(outcomes):
        side = str(rng.choice(["L", "R"])) if outcome != "normal" else ""
        plans.append(
            ExamPlan(
                index=i,
                patient_id=f"SYN{options.seed:04d}-{patient_of[i]:05d}",
                outcome=outcome,
                cancer_laterality=side,
                study_date=dates[i],
                photometric="MONOCHROME1" if i in mono1 else "MONOCHROME2",
                bits_stored=int(rng.choice(options.bits_stored)),
            )
        )
    return plans


def _pair_repeat_exams(
    outcomes: list[str], fraction: float, rng: np.random.Generator
) -> tuple[set[int], dict[int, int]]:
    """Choose exam pairs of one woman; the earlier exam of a pair is normal when possible."""
    n_pairs = int(len(outcomes) * fraction) // 2
    order = [int(i) for i in rng.permutation(len(outcomes))]
    normals = [i for i in order if outcomes[i] == "normal"]
    free = set(order)
    first_of_pair: set[int] = set()
    second_of: dict[int, int] = {}
    for _ in range(n_pairs):
        firsts = [i for i in normals if i in free] or [i for i in order if i in free]
        first = firsts[0]
        free.discard(first)
        seconds = [i for i in order if i in free]
        if not seconds:
            break
        free.discard(seconds[0])
        first_of_pair.add(first)
        second_of[first] = seconds[0]
    return first_of_pair, second_of


def generate_exams(options: SynthOptions) -> Iterator[SynthExam]:
    """Yield ``options.exams`` exams; deterministic for ``options.seed``."""
    for plan in plan_exams(options):
        rng = _seeded_rng("exam", options.seed, plan.index)
        yield generate_exam(
            rng,
            options=options,
            patient_id=plan.patient_id,
            outcome=plan.outcome,
            cancer_laterality=plan.cancer_laterality,
            study_date=plan.study_date,
            photometric=plan.photometric,
            bits_stored=plan.bits_stored,
        )


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class BreastAnatomy:
    """Shape and tissue of one breast, as fractions of the image size (chest wall at x=0)."""

    depth_cc: float  # chest wall to nipple, fraction of columns
    centre_cc: float  # nipple row, fraction of rows
    half_height_top: float  # CC extent above / below the nipple row, fraction of rows
    half_height_bottom: float
    roundness: float  # superellipse exponent of the CC outline
    depth_mlo: float
    nipple_mlo: float  # nipple row on MLO, fraction of rows
    fold_mlo: float  # inframammary fold row, fraction of rows
    top_width_mlo: float  # breast width at the top of the MLO, fraction of depth
    pectoral_width: float  # pectoral width at the top, fraction of MLO depth
    pectoral_height: float  # pectoral height along the chest wall, fraction of rows
    density: float  # 0 fatty .. 1 extremely dense
    texture_seed: int


def patient_anatomy(seed: int, patient_id: str) -> dict[Laterality, BreastAnatomy]:
    """Both breasts of one woman: alike, not identical. Depends on the seed and ID only."""
    rng = _seeded_rng("anatomy", seed, patient_id)
    depth = rng.uniform(0.45, 0.72)
    density = float(rng.beta(2.0, 2.2))
    base = {
        "depth_cc": depth,
        "centre_cc": rng.uniform(0.46, 0.54),
        "half_height_top": rng.uniform(0.34, 0.46),
        "half_height_bottom": rng.uniform(0.32, 0.44),
        "roundness": rng.uniform(1.9, 2.6),
        "depth_mlo": min(0.9, depth * rng.uniform(1.02, 1.15)),
        "nipple_mlo": rng.uniform(0.52, 0.64),
        "fold_mlo": rng.uniform(0.86, 1.02),
        "top_width_mlo": rng.uniform(0.32, 0.5),
        "pectoral_width": rng.uniform(0.3, 0.5),
        "pectoral_height": rng.uniform(0.35, 0.6),
    }
    breasts = {}
    for side in (Laterality.L, Laterality.R):
        jitter = {k: v * rng.uniform(0.97, 1.03) for k, v in base.items()}
        breasts[side] = BreastAnatomy(
            **jitter,
            density=float(np.clip(density + rng.normal(0, 0.04), 0.0, 1.0)),
            texture_seed=int(rng.integers(0, 2**31)),
        )
    return breasts


def density_category(density: float) -> str:
    """BI-RADS composition a..d for a phantom density."""
    return "abcd"[min(3, int(density * 4))]


@dataclass(frozen=True)
class _Geometry:
    """Outline of one view in full-resolution pixels of the canonical frame."""

    view: View
    depth: float  # chest wall to nipple (px)
    nipple: tuple[float, float]  # (x, y)
    rows: int
    columns: int
    anatomy: BreastAnatomy

    def width_at(self, y: np.ndarray) -> np.ndarray:
        """Distance from the chest wall to the skin for each row ``y`` (px)."""
        a = self.anatomy
        if self.view is View.CC:
            cy = self.nipple[1]
            half = np.where(y < cy, a.half_height_top, a.half_height_bottom) * self.rows
            s = np.clip(np.abs(y - cy) / half, 0.0, 1.0)
            return self.depth * (1.0 - s**a.roundness) ** (1.0 / a.roundness)
        yn, yf = self.nipple[1], a.fold_mlo * self.rows
        upper = (
            a.top_width_mlo
            + (1 - a.top_width_mlo) * np.sin(0.5 * np.pi * np.clip(y / yn, 0, 1)) ** 0.8
        )
        lower = np.sqrt(np.clip(1.0 - ((y - yn) / (yf - yn)) ** 2, 0.0, 1.0))
        return self.depth * np.where(y <= yn, upper, lower)

    def pectoral_edge(self, y: np.ndarray) -> np.ndarray:
        """Column of the pectoral muscle's anterior edge per row (0 where there is none)."""
        if self.view is View.CC:
            return np.zeros_like(y)
        a = self.anatomy
        s = np.clip(1.0 - y / (a.pectoral_height * self.rows), 0.0, 1.0)
        return a.pectoral_width * self.depth * s**0.8  # slightly convex towards the breast


def _geometry(anatomy: BreastAnatomy, view: View, rows: int, columns: int) -> _Geometry:
    if view is View.CC:
        depth = anatomy.depth_cc * columns
        nipple = (depth, anatomy.centre_cc * rows)
    else:
        depth = anatomy.depth_mlo * columns
        nipple = (depth, anatomy.nipple_mlo * rows)
    return _Geometry(view, depth, nipple, rows, columns, anatomy)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class _Finding:
    """A lesion in one view, canonical frame (chest wall at x=0), full-resolution pixels."""

    kind: str
    x: float
    y: float
    radius: float
    contrast: float
    seed: int


def _place_findings(
    rng: np.random.Generator,
    geometries: Mapping[View, _Geometry],
    *,
    kind: str,
    radius_px: float,
    contrast: float,
) -> dict[View, _Finding]:
    """One lesion seen in both views at the same distance from the nipple."""
    cc, mlo = geometries[View.CC], geometries[View.MLO]
    reach = min(cc.depth, mlo.depth)
    for _ in range(200):
        from_nipple = rng.uniform(0.28, 0.78) * reach
        spots = {}
        for geo in (cc, mlo):
            x = geo.depth - from_nipple
            y = _random_row_inside(rng, geo, x, radius_px)
            if y is None:
                break
            r = radius_px * rng.uniform(0.9, 1.1)
            spots[geo.view] = _Finding(kind, x, y, r, contrast, int(rng.integers(0, 2**31)))
        if len(spots) == 2:
            return spots
    raise SynthError(
        f"No room for a lesion of radius {radius_px:.1f} px; use a smaller "
        f'"lesion_radius_mm" for {cc.columns} columns.'
    )


def _random_row_inside(
    rng: np.random.Generator, geo: _Geometry, x: float, radius: float
) -> float | None:
    """A row where a disc of ``radius`` at column ``x`` is well inside breast tissue."""
    ys = np.arange(geo.rows, dtype=np.float64)
    margin = 1.3 * radius + 0.05 * geo.depth
    ok = (geo.width_at(ys) > x + margin) & (geo.pectoral_edge(ys) < x - 1.2 * radius)
    ok &= (ys > margin) & (ys < geo.rows - margin)
    ok &= x > margin
    # the disc must also fit vertically: rows a margin above and below are inside too
    shift = max(1, int(margin))
    above, below = np.zeros_like(ok), np.zeros_like(ok)
    above[shift:], below[:-shift] = ok[:-shift], ok[shift:]
    ok &= above & below
    candidates = np.flatnonzero(ok)
    if candidates.size == 0:
        return None
    return float(rng.choice(candidates)) + float(rng.uniform(-0.5, 0.5))


# --------------------------------------------------------------------------- rendering


def _fft_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    exponent: float,
    f_low: float,
    f_high: float,
    stretch: float = 1.0,
) -> np.ndarray:
    """Periodic power-law noise (std 1). ``stretch`` > 1 elongates structures along axis 0."""
    white = rng.standard_normal(shape, dtype=np.float32)
    fy = np.fft.fftfreq(shape[0])[:, None] * stretch
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    gain = np.where((f >= f_low) & (f <= f_high), np.maximum(f, f_low) ** -exponent, 0.0)
    gain *= np.exp(-((f / f_high) ** 2))
    out = np.fft.irfft2(np.fft.rfft2(white) * gain.astype(np.float32), s=shape)
    out -= out.mean()
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with the border values continued outward (edge padding)."""
    pad = int(3 * sigma) + 1
    padded = np.pad(img, pad, mode="edge")
    fy = np.fft.fftfreq(padded.shape[0])[:, None]
    fx = np.fft.rfftfreq(padded.shape[1])[None, :]
    gain = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy * fy + fx * fx)).astype(np.float32)
    out = np.fft.irfft2(np.fft.rfft2(padded) * gain, s=padded.shape)
    return out[pad:-pad, pad:-pad].astype(np.float32)


@dataclass(frozen=True)
class _CellTable:
    """Seeds of a periodic jittered grid for Worley (cellular) noise."""

    jitter_u: np.ndarray  # (n*n,) offsets of each cell's seed, 0..1
    jitter_v: np.ndarray
    value: np.ndarray  # (n*n,) random value identifying each cell
    n: int

    @classmethod
    def random(cls, rng: np.random.Generator, n: int = 256) -> _CellTable:
        jitter = rng.uniform(0.1, 0.9, size=(2, n * n)).astype(np.float32)
        return cls(jitter[0], jitter[1], rng.uniform(size=n * n).astype(np.float32), n)

    def sample(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distances (cell units) to the nearest and second-nearest seed, nearest cell's value."""
        iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
        f1 = np.full(u.shape, np.inf, dtype=np.float32)
        f2 = np.full(u.shape, np.inf, dtype=np.float32)
        ident = np.zeros(u.shape, dtype=np.float32)
        for du in (-1, 0, 1):
            row = ((iu + du) % self.n) * self.n
            for dv in (-1, 0, 1):
                cell = row + (iv + dv) % self.n
                eu = fu - (du + self.jitter_u.take(cell))
                ev = fv - (dv + self.jitter_v.take(cell))
                d2 = eu * eu + ev * ev
                closer = d2 < f1
                np.minimum(f2, np.where(closer, f1, d2), out=f2)
                np.copyto(ident, self.value.take(cell), where=closer)
                np.copyto(f1, d2, where=closer)
        return np.sqrt(f1), np.sqrt(f2), ident


@dataclass(frozen=True)
class _Textures:
    """Periodic tiles of one breast, shared by its CC and MLO views."""

    cloud: np.ndarray
    wobble: np.ndarray
    fragments: np.ndarray
    big_cells: _CellTable
    small_cells: _CellTable


@functools.lru_cache(maxsize=16)
def _breast_textures(texture_seed: int) -> _Textures:
    rng = np.random.default_rng(texture_seed)
    shape = (_TEXTURE, _TEXTURE)
    return _Textures(
        cloud=_fft_noise(rng, shape, exponent=1.7, f_low=2 / _TEXTURE, f_high=0.10, stretch=2.0),
        wobble=_fft_noise(rng, shape, exponent=1.5, f_low=2 / _TEXTURE, f_high=0.08),
        fragments=_fft_noise(
            rng, shape, exponent=1.2, f_low=8 / _TEXTURE, f_high=0.06, stretch=1.5
        ),
        big_cells=_CellTable.random(rng),
        small_cells=_CellTable.random(rng),
    )


def _sample_periodic(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic texture at (row=u, column=v) texel coordinates."""
    n0, n1 = tex.shape
    u0 = np.floor(u)
    v0 = np.floor(v)
    du = (u - u0).astype(np.float32)
    dv = (v - v0).astype(np.float32)
    i0 = u0.astype(np.int64) % n0
    j0 = v0.astype(np.int64) % n1
    i1 = (i0 + 1) % n0
    j1 = (j0 + 1) % n1
    top = tex[i0, j0] * (1 - dv) + tex[i0, j1] * dv
    bottom = tex[i1, j0] * (1 - dv) + tex[i1, j1] * dv
    return top * (1 - du) + bottom * du


def _resize_bilinear(img: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Bilinear resize (pixel-centre aligned) in two separable passes."""
    if img.shape == (rows, columns):
        return img

    def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2 if n_in > 1 else 0)
        w = (pos - lo).astype(np.float32)
        return lo, np.minimum(lo + 1, n_in - 1), w

    r0, r1, wr = axis_weights(img.shape[0], rows)
    tmp = img[r0] * (1 - wr)[:, None] + img[r1] * wr[:, None]
    c0, c1, wc = axis_weights(img.shape[1], columns)
    out = tmp[:, c0]
    out *= 1 - wc
    out += tmp[:, c1] * wc
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _render_tissue(geo: _Geometry, work_shape: tuple[int, int]) -> np.ndarray:
    """Attenuation (0..~0.9) of breast, pectoral and skin at work resolution, canonical frame."""
    a = geo.anatomy
    wr, wc = work_shape
    ys = ((np.arange(wr) + 0.5) * (geo.rows / wr) - 0.5).astype(np.float32)
    xs = ((np.arange(wc) + 0.5) * (geo.columns / wc) - 0.5).astype(np.float32)
    px_per_work = geo.columns / wc
    mask = (xs[None, :] < geo.width_at(ys)[:, None]).astype(np.float32)
    blurred = _gaussian_blur(mask, 0.04 * geo.depth / px_per_work)
    thickness = np.sqrt(np.clip(2.0 * blurred - 1.0, 0.0, 1.0))
    inside = np.flatnonzero(thickness > 0)  # texture only where there is tissue
    rows_in, cols_in = np.divmod(inside, wc)
    x, y, t = xs[cols_in], ys[rows_in], thickness.ravel()[inside]

    gland, ridges = _parenchyma(geo, x, y, t)
    view_rng = np.random.default_rng([a.texture_seed, 1 if geo.view is View.CC else 2])
    fine = _fft_noise(view_rng, work_shape, exponent=1.0, f_low=0.02, f_high=0.4)
    muscle = _pectoral(geo, x, y)
    covered = np.clip(muscle / 0.15, 0.0, 1.0)  # the muscle hides what lies behind it
    tissue = 0.30 + (0.38 * gland + 0.07 * ridges * (1.0 - 0.4 * gland)) * (1.0 - 0.8 * covered)
    tissue += muscle + 0.012 * fine.ravel()[inside]
    skin = np.exp(-(((t - 0.08) / 0.06) ** 2))
    att = np.zeros(wr * wc, dtype=np.float32)
    att[inside] = t * tissue + 0.05 * skin
    return att.reshape(work_shape)


def _parenchyma(
    geo: _Geometry, x: np.ndarray, y: np.ndarray, thickness: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Glandular fraction (0..1) and fibrous strands at points (x, y) inside the breast."""
    a = geo.anatomy
    tex = _breast_textures(a.texture_seed)
    # polar coordinates around the nipple: structures run towards it. Arcs are measured at
    # (r + r0) so that they do not converge to a sharp star at the nipple.
    texel = geo.depth / 180.0
    dx, dy = x - geo.nipple[0], y - geo.nipple[1]
    radius = np.sqrt(dx * dx + dy * dy) / texel
    angle = np.arctan2(dy, -dx) * (radius + 0.45 * geo.depth / texel)
    cloud = _sample_periodic(tex.cloud, radius, angle)
    wobble = _sample_periodic(tex.wobble, radius, angle)
    fragments = _sample_periodic(tex.fragments, radius, angle)
    # fat lobules framed by fibrous septa (Cooper's ligaments), large and small cells
    big_f1, big_f2, big_id = tex.big_cells.sample(radius / 13.0 + 0.6 * wobble, angle / 22.0)
    small_f1, small_f2, _ = tex.small_cells.sample(radius / 6.0 + 0.4 * wobble, angle / 9.0)
    septa = np.exp(-(((big_f2 - big_f1) / 0.07) ** 2))
    septa += 0.4 * np.exp(-(((small_f2 - small_f1) / 0.10) ** 2))
    fatty_cell = _smoothstep((0.1 + 0.4 * (1.0 - a.density) - big_id) / 0.15)
    lobule = _smoothstep((big_f2 - big_f1) / 0.9) * fatty_cell  # zero on cell borders
    # less structure right behind the nipple, where every coordinate line converges
    calm = _smoothstep(radius * texel / (0.12 * geo.depth))

    # where glandular tissue lives: central, behind the nipple, away from skin and chest wall
    if geo.view is View.CC:
        cy, sy = geo.nipple[1], 0.30 * geo.rows
    else:
        cy, sy = geo.nipple[1] - 0.05 * geo.rows, 0.24 * geo.rows
    ex = (x - 0.52 * geo.depth) / (0.45 * geo.depth)
    ey = (y - cy) / sy
    envelope = np.exp(-(ex * ex + ey * ey)) * _smoothstep(thickness / 0.85)
    level = 1.7 * envelope - 1.1 + 1.8 * (a.density - 0.5)
    gland = _sigmoid((cloud * calm + 2.0 * level) / 0.6)
    gland *= 1.0 - 0.35 * lobule * calm
    ridges = septa * _sigmoid((fragments + 0.2) / 0.3) * (0.5 + 0.5 * _sigmoid(wobble / 0.4))
    return gland, ridges * calm


def _pectoral(geo: _Geometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Added attenuation of the pectoral muscle (MLO only), brighter towards the chest wall."""
    if geo.view is View.CC:
        return np.zeros_like(x)
    edge = geo.pectoral_edge(y)
    muscle = _sigmoid((edge - x) / (0.006 * geo.depth)) * (edge > 0)
    return muscle * (0.20 + 0.10 * np.clip(1.0 - x / (edge + 1.0), 0, 1))


def _draw_finding(att: np.ndarray, finding: _Finding, pixel_mm: float) -> None:
    """Add a mass (round, lobulated or spiculated) or a calcification cluster, in place."""
    rng = np.random.default_rng(finding.seed)
    r = finding.radius
    reach = 3.2 * r if finding.kind == "spiculated_mass" else 1.8 * r
    x0, x1 = max(0, int(finding.x - reach)), min(att.shape[1], int(finding.x + reach) + 2)
    y0, y1 = max(0, int(finding.y - reach)), min(att.shape[0], int(finding.y + reach) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - finding.x
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - finding.y
    dist = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    patch = att[y0:y1, x0:x1]
    if finding.kind == "calcification_cluster":
        patch += _calcifications(rng, dx, dy, r, finding.contrast, pixel_mm)
        return
    lobes = np.zeros_like(theta)
    for k in (2, 3, 5):
        lobes += rng.uniform(0.02, 0.07) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rel = dist / (r * (1.0 + lobes))
    core = _smoothstep((1.0 - rel) / 0.3)
    halo = np.exp(-(rel**2) / 0.8)
    grain = _fft_noise(rng, dist.shape, exponent=1.2, f_low=0.5 / r, f_high=min(0.5, 6.0 / r))
    mass = (0.7 * core + 0.3 * halo) * (1.0 + 0.12 * grain)
    if finding.kind == "spiculated_mass":
        for _ in range(int(rng.integers(9, 16))):
            phi = rng.uniform(0, 2 * np.pi)
            length = r * rng.uniform(1.8, 3.0)
            along = dx * np.cos(phi) + dy * np.sin(phi)
            across = np.abs(-dx * np.sin(phi) + dy * np.cos(phi))
            taper = np.clip(1.0 - along / length, 0.0, 1.0)
            width = 0.05 * r * taper + 0.6
            start = _smoothstep((along - 0.6 * r) / (0.3 * r))
            mass += 0.3 * taper * start * np.exp(-((across / width) ** 2))
    patch += finding.contrast * mass
    if finding.kind != "subtle_mass" and rng.uniform() < 0.3:
        patch += _calcifications(rng, dx, dy, 0.6 * r, 0.8, pixel_mm)


def _calcifications(
    rng: np.random.Generator,
    dx: np.ndarray,
    dy: np.ndarray,
    spread: float,
    strength: float,
    pixel_mm: float,
) -> np.ndarray:
    """5-15 specks of 0.1-0.35 mm; sub-pixel specks fade as real ones do at low resolution."""
    out = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=np.float32)
    for _ in range(int(rng.integers(5, 16))):
        rho = spread * math.sqrt(rng.uniform())
        phi = rng.uniform(0, 2 * np.pi)
        size_px = rng.uniform(0.1, 0.35) / pixel_mm
        sigma = max(size_px, 0.6)
        amp = strength * 0.45 * min(1.0, (size_px / sigma) ** 2)
        ex = dx - rho * math.cos(phi)
        ey = dy - rho * math.sin(phi)
        out += amp * np.exp(-(ex * ex + ey * ey) / (2 * sigma * sigma))
    return out


def render_view(
    anatomy: BreastAnatomy,
    view: View,
    rows: int,
    columns: int,
    *,
    findings: tuple[_Finding, ...] = (),
    pixel_mm: float = 0.1,
) -> np.ndarray:
    """Attenuation image (float32, ~0..1) of one view in the canonical frame (chest wall left)."""
    geo = _geometry(anatomy, view, rows, columns)
    scale = min(1.0, _WORK_MAX / max(rows, columns))
    work_shape = (max(16, round(rows * scale)), max(16, round(columns * scale)))
    att = _resize_bilinear(_render_tissue(geo, work_shape), rows, columns)
    for finding in findings:
        _draw_finding(att, finding, pixel_mm)
    return att


def encode_pixels(
    att: np.ndarray, *, rng: np.random.Generator, bits_stored: int, photometric: str
) -> tuple[np.ndarray, tuple[float, float]]:
    """Attenuation -> stored values with noise; returns pixels and (window centre, width).

    MONOCHROME2: air near 0, dense tissue bright. MONOCHROME1 stores ``2**bits - 1 - value``.
    """
    top = float(2**bits_stored - 1)
    noise_sd = np.sqrt(np.clip(att, 0.0, None))  # quantum-like: grows with the signal
    noise_sd *= 0.012
    noise_sd += 0.002
    signal = rng.standard_normal(att.shape, dtype=np.float32)
    signal *= noise_sd
    signal += att
    signal *= 0.92 * top
    signal += 0.012 * top
    np.clip(signal, 0, top, out=signal)
    stored = np.rint(signal).astype(np.uint16)
    sample = stored[::4, ::4].astype(np.float32)
    tissue = sample[sample > 0.12 * top]
    if tissue.size < 16:
        tissue = sample.ravel()
    low, high = np.percentile(tissue, [1.0, 99.8])
    centre, width = (low + high) / 2.0, max(high - low, 1.0) * 1.1
    if photometric == "MONOCHROME1":
        stored = (int(top) - stored).astype(np.uint16)
        centre = top - centre
    return stored, (round(float(centre), 1), round(float(width), 1))


# --------------------------------------------------------------------------- DICOM


def _view_code(view: View) -> tuple[str, str, str]:
    value, meaning = VIEW_CODES[view]
    return value, "SCT", meaning


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def mg_for_presentation_dataset(
    pixels: np.ndarray,
    *,
    slot: Slot,
    patient: PatientIdentity,
    study: StudyIdentity,
    series_uid: str,
    sop_instance_uid: str,
    series_number: int,
    bits_stored: int,
    photometric: str,
    pixel_spacing_mm: float,
    patient_orientation: tuple[str, str] | None = None,
    window: tuple[float, float] | None = None,
    manufacturer: str = MANUFACTURER,
    model_name: str = "Synthetic FFDM",
    extra: Mapping[str, object] | None = None,
) -> Dataset:
    """A Digital Mammography X-Ray Image - For Presentation dataset with file meta.

    ``pixels`` is uint16 (Rows, Columns) as stored; nothing is flipped here. The default
    PatientOrientation assumes the chest wall of a left breast at column 0 and of a right
    breast at the last column. ``extra`` adds keyword -> value pairs (KVP, Exposure,
    DetectorType...) and may override any attribute set here.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint16:
        raise SynthError(
            f'Argument "pixels" should be a 2-D uint16 array; got {pixels.dtype} {pixels.shape}.'
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SynthError(f'Argument "photometric" should be MONOCHROME1/2; got "{photometric}".')
    if int(pixels.max(initial=0)) >= 2**bits_stored:
        raise SynthError(
            f'Argument "pixels" has values above {2**bits_stored - 1} for bits_stored '
            f"{bits_stored}."
        )
    ds = Dataset()
    patient_study_series(ds, patient, study, series_uid, series_number, "MG")
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_instance_uid
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model_name
    ds.SoftwareVersions = f"mammo-node {__version__}"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.InstanceNumber = 1
    ds.PatientOrientation = list(patient_orientation or PATIENT_ORIENTATION[slot])
    ds.ContentDate = study.date
    ds.ContentTime = study.time
    ds.AcquisitionDate = study.date
    ds.AcquisitionTime = study.time
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    ds.ImageLaterality = slot.laterality.value
    ds.BodyPartExamined = "BREAST"
    ds.AnatomicRegionSequence = DicomSequence([code_item("76752008", "SCT", "Breast")])
    ds.ViewPosition = slot.view.value
    view_item = code_item(*_view_code(slot.view))
    view_item.ViewModifierCodeSequence = DicomSequence([])
    ds.ViewCodeSequence = DicomSequence([view_item])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.DetectorType = ""  # type 2: unknown unless ``extra`` says
    ds.ImagerPixelSpacing = [f"{pixel_spacing_mm:.6g}"] * 2
    ds.PixelSpacing = [f"{pixel_spacing_mm:.6g}"] * 2
    ds.AcquisitionContextSequence = DicomSequence([])
    _pixel_module(ds, pixels, bits_stored=bits_stored, photometric=photometric)
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    if window is None:
        top = 2**bits_stored - 1
        window = (top / 2.0, float(top))
    ds.WindowCenter = f"{window[0]:.1f}"
    ds.WindowWidth = f"{window[1]:.1f}"
    ds.WindowCenterWidthExplanation = "NORMAL"
    ds.VOILUTFunction = "LINEAR"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    return with_file_meta(ds)


def patient_study_series(
    ds: Dataset,
    patient: PatientIdentity,
    study: StudyIdentity,
    series_uid: str,
    series_number: int,
    modality: str,
) -> None:
    """Patient, General Study and General Series attributes (shared with mammo_node.synth.wrap)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F"
    if patient.birth_date and study.date:
        born = dt.datetime.strptime(patient.birth_date, "%Y%m%d").date()
        seen = dt.datetime.strptime(study.date, "%Y%m%d").date()
        years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
        ds.PatientAge = f"{years:03d}Y"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = study.date
    ds.SeriesTime = study.time


def _pixel_module(ds: Dataset, pixels: np.ndarray, *, bits_stored: int, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


def with_file_meta(ds: Dataset) -> Dataset:
    """Add Part-10 file meta (explicit VR little endian) to ``ds`` and return it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MAMMO_NODE_{__version__}"[:16]
    ds.file_meta = meta
    ds.InstanceCreationDate = ds.get("ContentDate", "")
    ds.InstanceCreationTime = ds.get("ContentTime", "")
    return ds


def _acquisition(rng: np.random.Generator, slot: Slot, thickness_mm: float) -> dict[str, object]:
    """Equipment, exposure and positioner values a real FFDM header carries (plausible values,
    not a physical model)."""
    sid = 660.0
    to_patient = round(sid - thickness_mm - 20.0)
    kvp = round(25.0 + 0.12 * thickness_mm + rng.uniform(-1, 1))
    mas = round(float(rng.uniform(0.9, 1.3) * (40 + 2.2 * thickness_mm)), 1)
    current = float(rng.choice([100.0, 120.0, 160.0]))
    angle = 0.0 if slot.view is View.CC else (45.0 if slot.laterality is Laterality.R else -45.0)
    return {
        "InstitutionName": "Synthetic Screening Unit",
        "StationName": "SYNTH1",
        "DeviceSerialNumber": "0001",
        "DetectorType": "DIRECT",
        "DetectorConfiguration": "AREA",
        "KVP": f"{kvp:.0f}",
        "Exposure": round(mas),
        "ExposureInuAs": round(mas * 1000),
        "XRayTubeCurrent": round(current),
        "ExposureTime": round(mas / current * 1000),
        "BodyPartThickness": f"{thickness_mm:.0f}",
        "CompressionForce": f"{rng.uniform(60, 140):.0f}",
        "PositionerPrimaryAngle": f"{angle:.1f}",
        "DistanceSourceToDetector": f"{sid:.0f}",
        "DistanceSourceToPatient": f"{to_patient}",
        "EstimatedRadiographicMagnificationFactor": f"{sid / to_patient:.4f}",
        "AnodeTargetMaterial": "TUNGSTEN",
        "FilterMaterial": "RHODIUM",
        "FilterThicknessMinimum": "0.05",
        "FilterThicknessMaximum": "0.05",
        "Grid": "RECIPROCATING",
        "FocalSpots": "0.3",
        "RelativeXRayExposure": int(rng.integers(300, 900)),
        "OrganDose": f"{rng.uniform(0.8, 2.2):.2f}",
        "EntranceDoseInmGy": f"{rng.uniform(3.0, 9.0):.2f}",
    }


# --------------------------------------------------------------------------- exams


def generate_exam(
    rng: np.random.Generator,
    *,
    options: SynthOptions,
    patient_id: str,
    outcome: str,
    cancer_laterality: str,
    study_date: dt.date,
    photometric: str | None = None,
    bits_stored: int | None = None,
) -> SynthExam:
    """One 4-view exam. Anatomy comes from (seed, patient_id); everything else from ``rng``."""
    if outcome not in OUTCOMES:
        raise SynthError(f'Argument "outcome" should be one of {OUTCOMES}; got "{outcome}".')
    if (outcome == "normal") != (cancer_laterality == ""):
        raise SynthError(
            f'Argument "cancer_laterality" should be "L" or "R" for a cancer and "" for a '
            f'normal exam; got "{cancer_laterality}" for "{outcome}".'
        )
    if photometric is None:
        mono1 = rng.uniform() < options.monochrome1_fraction
        photometric = "MONOCHROME1" if mono1 else "MONOCHROME2"
    if bits_stored is None:
        bits_stored = int(rng.choice(options.bits_stored))
    anatomy = patient_anatomy(options.seed, patient_id)
    patient = _patient_identity(options.seed, patient_id)
    study = StudyIdentity(
        study_uid=make_uid("study", options.seed, patient_id, study_date.isoformat()),
        date=study_date.strftime("%Y%m%d"),
        time=f"{int(rng.integers(8, 17)):02d}{int(rng.integers(0, 60)):02d}00",
        accession=f"SA{int(rng.integers(10**7, 10**8))}",
    )
    findings = _exam_findings(rng, options, anatomy, outcome, cancer_laterality)
    datasets: dict[Slot, Dataset] = {}
    truth: list[LesionTruth] = []
    thickness_mm = {side: float(rng.uniform(35, 75)) for side in Laterality}
    for number, slot in enumerate(SLOTS, start=1):
        view_findings = tuple(f[slot.view] for f in findings[slot.laterality])
        pixels, window = _render_slot(
            rng, options, slot, anatomy[slot.laterality], view_findings, bits_stored, photometric
        )
        sop_uid = make_uid("image", study.study_uid, slot)
        compressed = thickness_mm[slot.laterality] * (1.08 if slot.view is View.MLO else 1.0)
        datasets[slot] = mg_for_presentation_dataset(
            pixels,
            slot=slot,
            patient=patient,
            study=study,
            series_uid=make_uid("series", study.study_uid, slot),
            sop_instance_uid=sop_uid,
            series_number=number,
            bits_stored=bits_stored,
            photometric=photometric,
            pixel_spacing_mm=options.pixel_spacing_mm,
            window=window,
            extra={
                **_acquisition(rng, slot, compressed),
                "SeriesDescription": f"{slot.laterality.value} {slot.view.value}",
            },
        )
        for f in view_findings:
            x = options.columns - 1 - f.x if slot.laterality is Laterality.R else f.x
            truth.append(
                LesionTruth(
                    sop_uid,
                    study.study_uid,
                    patient_id,
                    str(slot),
                    round(x, 2),
                    round(f.y, 2),
                    round(f.radius, 2),
                    f.kind,
                )
            )
    scores = _reader_scores(rng, outcome, cancer_laterality, findings)
    logger.debug("synthetic exam %s: %s, %d findings", study.study_uid, outcome, len(truth))
    return SynthExam(
        patient_id=patient_id,
        study_uid=study.study_uid,
        outcome=outcome,
        cancer_laterality=cancer_laterality,
        datasets=datasets,
        truth=truth,
        study_date=study.date,
        reader_scores=scores,
        density=density_category(anatomy[Laterality.L].density),
    )


def _render_slot(
    rng: np.random.Generator,
    options: SynthOptions,
    slot: Slot,
    anatomy: BreastAnatomy,
    findings: tuple[_Finding, ...],
    bits_stored: int,
    photometric: str,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored pixels and window of one view; right breasts mirrored as a detector stores them."""
    att = render_view(
        anatomy,
        slot.view,
        options.rows,
        options.columns,
        findings=findings,
        pixel_mm=options.pixel_spacing_mm,
    )
    if slot.laterality is Laterality.R:
        att = att[:, ::-1]
    return encode_pixels(att, rng=rng, bits_stored=bits_stored, photometric=photometric)


def _patient_identity(seed: int, patient_id: str) -> PatientIdentity:
    rng = _seeded_rng("identity", seed, patient_id)
    born = dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20 * 365)))
    number = patient_id.rsplit("-", 1)[-1]
    return PatientIdentity(patient_id, f"SYNTHETIC^PATIENT{number}", born.strftime("%Y%m%d"))


def _exam_findings(
    rng: np.random.Generator,
    options: SynthOptions,
    anatomy: Mapping[Laterality, BreastAnatomy],
    outcome: str,
    cancer_laterality: str,
) -> dict[Laterality, list[dict[View, _Finding]]]:
    """Findings per breast, each seen in both views."""
    pixel_mm = options.pixel_spacing_mm
    found: dict[Laterality, list[dict[View, _Finding]]] = {side: [] for side in Laterality}

    def geometries(side: Laterality) -> dict[View, _Geometry]:
        return {v: _geometry(anatomy[side], v, options.rows, options.columns) for v in View}

    radius_mm = float(rng.uniform(*options.lesion_radius_mm))
    if outcome == "screening" or (
        outcome == "interval" and rng.uniform() < options.interval_visible_fraction
    ):
        side = Laterality(cancer_laterality)
        contrast = options.lesion_contrast
        if outcome == "interval":
            kind, contrast = "subtle_mass", contrast * options.interval_contrast_factor
            radius_mm *= 0.8
        elif rng.uniform() < options.calcification_only_fraction:
            kind = "calcification_cluster"
        elif rng.uniform() < options.spiculated_fraction:
            kind = "spiculated_mass"
        else:
            kind = "mass"
        found[side].append(
            _place_findings(
                rng, geometries(side), kind=kind, radius_px=radius_mm / pixel_mm, contrast=contrast
            )
        )
    for side in Laterality:
        if side.value != cancer_laterality and rng.uniform() < options.benign_fraction:
            benign_mm = float(rng.uniform(3.0, 6.0))
            found[side].append(
                _place_findings(
                    rng,
                    geometries(side),
                    kind="benign_nodule",
                    radius_px=benign_mm / pixel_mm,
                    contrast=0.5 * options.lesion_contrast,
                )
            )
    return found


def _reader_scores(
    rng: np.random.Generator,
    outcome: str,
    cancer_laterality: str,
    findings: Mapping[Laterality, list[dict[View, _Finding]]],
) -> dict[str, int]:
    """Two readers' suspicion 1-5 per breast, correlated with the truth and with each other."""
    scores: dict[str, int] = {}
    for side in Laterality:
        cancer = side.value == cancer_laterality
        if cancer and outcome == "screening":
            base = 3.6
        elif cancer:
            base = 1.8 if findings[side] else 1.3
        elif findings[side]:
            base = 2.2
        else:
            base = 1.0
        shared = rng.normal(0.0, 0.6)
        for reader in (1, 2):
            latent = base + shared + rng.normal(0.0, 0.5)
            scores[f"reader{reader}_{side.value}"] = int(np.clip(round(latent), 1, 5))
    return scores


# --------------------------------------------------------------------------- writing


def write_synthetic_dataset(out_dir: Path, options: SynthOptions) -> SynthSummary:
    """Write ``out_dir/<study_uid>/<slot>.dcm``, ``labels.csv`` and ``truth.csv``."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    patients: set[str] = set()
    outcomes = dict.fromkeys(OUTCOMES, 0)
    labels_csv, truth_csv = out_dir / "labels.csv", out_dir / "truth.csv"
    with labels_csv.open("w", newline="") as lf, truth_csv.open("w", newline="") as tf:
        labels = csv.DictWriter(lf, fieldnames=LABEL_COLUMNS)
        truths = csv.DictWriter(tf, fieldnames=TRUTH_COLUMNS)
        labels.writeheader()
        truths.writeheader()
        for exam in generate_exams(options):
            exam_dir = out_dir / exam.study_uid
            exam_dir.mkdir(exist_ok=True)
            for slot, ds in exam.datasets.items():
                path = exam_dir / f"{slot}.dcm"
                ds.save_as(path, enforce_file_format=True)
                files.append(path)
            files.extend(_write_habits(exam, options, exam_dir))
            labels.writerow(_label_row(exam))
            for t in exam.truth:
                truths.writerow({k: getattr(t, k) for k in TRUTH_COLUMNS})
            patients.add(exam.patient_id)
            outcomes[exam.outcome] += 1
    seconds = time.perf_counter() - started
    logger.info(
        "wrote %d synthetic exams (%d images) in %.1f s", options.exams, len(files), seconds
    )
    return SynthSummary(
        out_dir,
        options.exams,
        len(files),
        len(patients),
        outcomes,
        labels_csv,
        truth_csv,
        files,
        seconds,
    )


def _write_habits(exam: SynthExam, options: SynthOptions, exam_dir: Path) -> list[Path]:
    """Re-date the exam (``recent``) and write the objects its habits add, as extra-NN.dcm;
    the four clean views are rewritten when a habit changed them (syntax, identity)."""
    if not options.habits and not options.recent:
        return []
    from mammo_node.synth import habits as site_habits

    views = list(exam.datasets.values())
    if options.recent:
        site_habits.recent(views)
    objects = site_habits.add_habits(views, options.habits)
    for slot, ds in exam.datasets.items():
        ds.save_as(exam_dir / f"{slot}.dcm", enforce_file_format=True)
    extras = []
    for i, ds in enumerate(objects[len(views) :]):
        path = exam_dir / f"extra-{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        extras.append(path)
    return extras


def _label_row(exam: SynthExam) -> dict[str, object]:
    return {
        "patient_id": exam.patient_id,
        "study_uid": exam.study_uid,
        "outcome": exam.outcome,
        "cancer_laterality": exam.cancer_laterality,
        **exam.reader_scores,
        "study_date": exam.study_date,
        "density": exam.density,
    }
