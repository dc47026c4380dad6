"""The attention model's region of interest: a roi_size square around the COA, cut from the
oriented image at the higher ("hires") resolution, clamped inside the image.

The COA is first mapped from the model's input back to the stored pixel grid, then into the
hires grid; the box is reported in stored pixels (x0, y0, x1, y1), x1/y1 exclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mammo_node.ml.preprocess import Geometry, cut_window


@dataclass(frozen=True)
class RoiCrop:
    crop: torch.Tensor  # (roi_size, roi_size), 0..1, zero where the window leaves the image
    hires_origin: tuple[int, int]  # (x, y) of the crop's top-left in the hires grid
    stored_box: tuple[int, int, int, int]  # the image part it covers, stored pixels
    coa_stored: tuple[float, float]


def window_origin(centre: float, extent: int, size: int) -> int:
    """Start of a ``size`` window centred at ``centre`` and kept inside [0, extent).

    When the image is smaller than the window the window starts at 0 (zero padding after).
    """
    start = math.floor(centre - size / 2 + 0.5)
    return max(0, min(start, extent - size))


def roi_origin(
    geometry: Geometry, coa_stored: tuple[float, float], roi_size: int
) -> tuple[int, int]:
    """(x, y) top-left of the ROI window in the hires grid for a COA in stored pixels."""
    hx, hy = geometry.to_hires(*coa_stored)
    rows, cols = geometry.hires_shape or (0, 0)
    return window_origin(hx, cols, roi_size), window_origin(hy, rows, roi_size)


def stored_box(
    geometry: Geometry, origin: tuple[int, int], roi_size: int
) -> tuple[int, int, int, int]:
    """The stored-pixel box covered by a hires window (clipped to the image)."""
    rows, cols = geometry.hires_shape or (0, 0)
    hx0, hy0 = origin
    hx1, hy1 = min(cols, hx0 + roi_size), min(rows, hy0 + roi_size)
    xa, ya = geometry.hires_to_stored(float(hx0), float(hy0))
    xb, yb = geometry.hires_to_stored(float(hx1), float(hy1))
    srows, scols = geometry.stored_shape
    x0 = max(0, math.floor(min(xa, xb) + 1e-6))
    x1 = min(scols, math.ceil(max(xa, xb) - 1e-6))
    y0 = max(0, math.floor(min(ya, yb) + 1e-6))
    y1 = min(srows, math.ceil(max(ya, yb) - 1e-6))
    return x0, y0, x1, y1


def cut_roi(
    hires: np.ndarray | torch.Tensor,
    geometry: Geometry,
    coa_model: tuple[float, float],
    *,
    roi_size: int,
) -> RoiCrop:
    """The ROI around a COA given in the model input's coordinates."""
    if geometry.hires_shape is None or tuple(np.shape(hires)) != geometry.hires_shape:
        raise ValueError(
            f'Argument "hires" should have shape {geometry.hires_shape}, '
            f"got {tuple(np.shape(hires))}."
        )
    coa_stored = geometry.to_stored(float(coa_model[0]), float(coa_model[1]))
    origin = roi_origin(geometry, coa_stored, roi_size)
    image = torch.as_tensor(np.asarray(hires), dtype=torch.float32)
    crop = cut_window(image, origin[0], origin[1], roi_size)
    return RoiCrop(
        crop=crop,
        hires_origin=origin,
        stored_box=stored_box(geometry, origin, roi_size),
        coa_stored=(float(coa_stored[0]), float(coa_stored[1])),
    )


# --- on the model's device --------------------------------------------------------------


def roi_origin_tensor(geometry: Geometry, coa_model: torch.Tensor, roi_size: int) -> torch.Tensor:
    """:func:`roi_origin` of a COA still on the model's device: (2,) int64 (x, y) there.

    The same float64 operations in the same order as the host functions (``to_stored``,
    ``to_hires``, ``window_origin``), so the origin is the same integer, without a device to
    host copy between the saliency pass and the crop.
    """
    if geometry.hires_shape is None:
        raise ValueError("This geometry has no hires image (prepared without with_hires).")
    coa = coa_model.detach().to(torch.float64)
    sx, sy = geometry.scale
    hx_scale, hy_scale = geometry.hires_scale
    width = geometry.stored_shape[1]
    x = (coa[0] + geometry.offset[0]) / sx
    if geometry.flipped:
        x = width - x  # stored x
    y = (coa[1] + geometry.offset[1]) / sy
    hx = (width - x if geometry.flipped else x) * hx_scale
    hy = y * hy_scale
    rows, cols = geometry.hires_shape
    start_x = torch.floor(hx - roi_size / 2 + 0.5).clamp(max=cols - roi_size).clamp(min=0)
    start_y = torch.floor(hy - roi_size / 2 + 0.5).clamp(max=rows - roi_size).clamp(min=0)
    return torch.stack([start_x, start_y]).to(torch.int64)


def cut_roi_window(
    hires: torch.Tensor, geometry: Geometry, origin: torch.Tensor, roi_size: int
) -> torch.Tensor:
    """The roi_size square at ``origin`` (oriented hires grid, a device tensor) from a hires
    image kept in the STORED orientation: a mirrored view's columns are read through the
    mirror, so no mirrored copy of the hires image is made. Zero outside the image."""
    rows, cols = int(hires.shape[0]), int(hires.shape[1])
    steps = torch.arange(roi_size, device=hires.device)
    xs = origin[0] + steps
    ys = origin[1] + steps
    inside = (xs < cols)[None, :] & (ys < rows)[:, None]
    src_x = (cols - 1 - xs) if geometry.flipped else xs
    src_x = src_x.clamp(0, cols - 1)
    src_y = ys.clamp(0, rows - 1)
    crop = hires[src_y[:, None], src_x[None, :]]
    return torch.where(inside, crop, torch.zeros((), dtype=crop.dtype, device=crop.device))


def roi_from_origin(
    geometry: Geometry, coa_model: tuple[float, float], origin: tuple[int, int], roi_size: int
) -> tuple[tuple[float, float], tuple[int, int, int, int]]:
    """(COA in stored pixels, stored box) of a ROI cut at ``origin`` (host values)."""
    coa_stored = geometry.to_stored(float(coa_model[0]), float(coa_model[1]))
    return (float(coa_stored[0]), float(coa_stored[1])), stored_box(geometry, origin, roi_size)
