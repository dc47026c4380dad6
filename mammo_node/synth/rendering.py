"""Pixels of one view: tissue texture, pectoral muscle, lesions, then stored values and window."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mammo_node.domain import View
from mammo_node.synth.anatomy import BreastAnatomy, _Finding, _Geometry, _geometry

_WORK_MAX = 1024  # the phantom is drawn at most this large, then upsampled
_TEXTURE = 512  # side of the periodic texture tiles


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
