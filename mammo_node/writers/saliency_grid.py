"""The model's saliency map on an output's pixel grid.

The scorer hands the writers its map as the model made it (:class:`~mammo_node.domain.
SaliencyMap`: the model's rescaled grid, about 3.4 stored pixels per map pixel on a
4096 x 3328 detector image). Each output resamples it once, to the grid it draws on:

- the Secondary Capture's heat map (:func:`on_blocks`; by bands of rows :class:`BlockSampler`):
  the map's bilinear interpolation at the centre of each SC pixel, i.e. of each block of
  ``factor`` x ``factor`` stored pixels. For a map that is linear over a block that is the block
  mean of the bilinear full-size map; the map's own detail is coarser than the block anyway;
- the SEG's mask (:func:`top_mask`): the top fraction of the map's own pixels, the pixels from
  which the centre of attention is taken, each stored pixel taking the map pixel its centre lies
  in (nearest neighbour, so the mask keeps its share of the image).

Neither makes the full-size float map (13.6 MP, 54 MB a view; its bilinear upsample alone was
about 50 ms a view on this project's CPU).
"""

from __future__ import annotations

import math

import numpy as np

from mammo_node.domain import SaliencyMap


def _finite(values: np.ndarray) -> np.ndarray:
    """float32 values with NaN and -inf as 0 and +inf as 1 (no copy when all are finite)."""
    values = values.astype(np.float32, copy=False)
    if np.isfinite(values.sum()):
        return values
    return np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)


def _bilinear_axis(
    n_out: int, factor: int, n_stored: int, n_map: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, per output pixel: the two map indices and the second one's weight for
    the bilinear value at the centre of its block of ``factor`` stored pixels. The pixel-centre
    convention and the edge clamp are torch's ``interpolate(mode="bilinear",
    align_corners=False)``, so ``factor`` 1 gives the scorer's former stored-grid map."""
    centre = (np.arange(n_out, dtype=np.float64) + 0.5) * factor  # edge-origin stored units
    position = np.clip(centre * (n_map / n_stored) - 0.5, 0.0, n_map - 1)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, n_map - 1)
    return low, high, (position - low).astype(np.float32)


class BlockSampler:
    """The map bilinear at the centre of each block of ``factor`` x ``factor`` stored pixels,
    row by row: :meth:`rows` gives any band of the result, so an output drawn in bands never
    holds the whole float map (the axes' indices and weights are computed once)."""

    def __init__(self, saliency: SaliencyMap, factor: int = 1) -> None:
        if factor < 1:
            raise ValueError(f'Argument "factor" should be >= 1, got {factor!r}.')
        rows, columns = saliency.stored_shape
        self.shape = (math.ceil(rows / factor), math.ceil(columns / factor))
        self._values = _finite(saliency.values)
        h, w = self._values.shape
        self._y = _bilinear_axis(self.shape[0], factor, rows, h)
        self._x = _bilinear_axis(self.shape[1], factor, columns, w)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """float32 (rows start..stop of the result, its columns) in 0..1."""
        y0, y1, wy = (axis[start:stop] for axis in self._y)
        x0, x1, wx = self._x
        along_y = np.take(self._values, y0, axis=0)
        along_y *= (1.0 - wy)[:, None]
        along_y += np.take(self._values, y1, axis=0) * wy[:, None]
        out = np.take(along_y, x0, axis=1)
        out *= 1.0 - wx
        out += np.take(along_y, x1, axis=1) * wx
        return np.clip(out, 0.0, 1.0, out=out)


def on_blocks(saliency: SaliencyMap, factor: int = 1) -> np.ndarray:
    """float32 (ceil(Rows / factor), ceil(Columns / factor)) in 0..1: the map bilinear at the
    centre of each block of ``factor`` x ``factor`` stored pixels (``factor`` 1: the stored
    grid); a ragged last block takes the value at its centre, the edge clamped."""
    sampler = BlockSampler(saliency, factor)
    return sampler.rows(0, sampler.shape[0])


def salient_mask(values: np.ndarray, top_fraction: float) -> np.ndarray:
    """Boolean mask of the top ``top_fraction`` of ``values`` (ties at the cut included, > 0
    only), on the grid of ``values``."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f'Argument "top_fraction" should be in (0, 1], got {top_fraction!r}.')
    values = _finite(values)
    k = max(1, math.ceil(top_fraction * values.size))
    return (values >= _kth_largest(values.ravel(), k)) & (values > 0)


def _kth_largest(flat: np.ndarray, k: int) -> float:
    """Exact k-th largest value; partitions only the candidates above a sampled lower bound
    (a full partition of a 13.6 MP map takes 0.4 s, this about 30 ms)."""
    step = max(1, flat.size // 200_000)
    sample = flat[::step]
    guess_rank = min(sample.size - 1, max(0, sample.size - 1 - 2 * (k // step) - 64))
    bound = np.partition(sample, guess_rank)[guess_rank]
    candidates = flat[flat >= bound]
    if candidates.size < k:  # the sample misled us: fall back to the whole map
        candidates = flat
    return float(np.partition(candidates, candidates.size - k)[candidates.size - k])


def _nearest_axis(n_stored: int, n_map: int) -> np.ndarray:
    """Per stored pixel along one axis, the map pixel its centre lies in."""
    centre = (np.arange(n_stored, dtype=np.float64) + 0.5) * (n_map / n_stored)
    return np.minimum(np.floor(centre).astype(np.intp), n_map - 1)


def top_mask(saliency: SaliencyMap, top_fraction: float) -> np.ndarray:
    """bool (Rows, Columns): :func:`salient_mask` of the map's own pixels, drawn on the
    stored grid (each stored pixel takes the map pixel its centre lies in). Only the bounding
    box of the salient map pixels is resampled; the rest of the image stays False."""
    small = salient_mask(saliency.values, top_fraction)
    rows, columns = saliency.stored_shape
    out = np.zeros((rows, columns), dtype=bool)
    iy = _nearest_axis(rows, small.shape[0])
    ix = _nearest_axis(columns, small.shape[1])
    live_rows = np.flatnonzero(small.any(axis=1)[iy])
    live_cols = np.flatnonzero(small.any(axis=0)[ix])
    if live_rows.size == 0:
        return out
    r0, r1 = int(live_rows[0]), int(live_rows[-1]) + 1
    c0, c1 = int(live_cols[0]), int(live_cols[-1]) + 1
    out[r0:r1, c0:c1] = np.take(np.take(small, iy[r0:r1], axis=0), ix[c0:c1], axis=1)
    return out
