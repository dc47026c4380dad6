"""A woman's breasts (outline, density, nipple) and the findings placed in both views."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mammo_node.domain import Laterality, View
from mammo_node.synth.identifiers import _seeded_rng
from mammo_node.synth.options import SynthError


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
