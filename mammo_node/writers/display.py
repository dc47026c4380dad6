"""Source pixels as a viewer would show them: greyscale 0..1 with 1 = white on screen.

Order of the DICOM greyscale pipeline (PS3.3 C.11): Modality LUT (or Rescale Slope /
Intercept), then the VOI transform - a VOI LUT Sequence if present, else the first Window
Center / Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID) - then MONOCHROME1 is
inverted so that more attenuation shows brighter, as it does in a viewer. An image with no VOI
information is windowed from its 0.5th to 99.5th percentile.
"""

from __future__ import annotations

import math

import numpy as np
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mammo_node import lut
from mammo_node.errors import OutputError


def display_grey(dataset: Dataset, factor: int = 1) -> np.ndarray:
    """(Rows, Columns) float32 in 0..1 as displayed, reduced ``factor`` x by block mean
    (ceil sizes); raises OutputError if undecodable.

    8- and 16-bit images go through one table lookup per block offset
    (:func:`mammo_node.lut.lookup_reduced`): the full-size displayed image is never made.
    """
    try:
        stored = dataset.pixel_array
    except Exception as exc:  # any decoder failure: the file cannot be rendered
        raise OutputError(
            f"Image {dataset.get('SOPInstanceUID')}: pixel data cannot be decoded "
            f"(transfer syntax {_transfer_syntax(dataset)}): {exc}"
        ) from exc
    if stored.ndim != 2:
        raise OutputError(
            f"Image {dataset.get('SOPInstanceUID')}: expected one greyscale frame, got pixel "
            f"array of shape {stored.shape}."
        )
    if lut.has_table(stored):  # one lookup per pixel (mammo_node.lut): the same values
        table = lut.by_pattern(_grey(lut.domain(stored.dtype), dataset, stored), stored.dtype)
        return lut.lookup_reduced(table, stored, factor)
    return block_mean(_grey(stored, dataset, stored), factor)


def _grey(values: np.ndarray, dataset: Dataset, stored: np.ndarray) -> np.ndarray:
    """The display pipeline over ``values`` (the image itself, or every possible stored value
    for a table); ``stored`` is the image, for the percentile window."""
    if "VOILUTSequence" in dataset:
        grey = _voi_lut(values, dataset)
    else:
        mapped = np.asarray(apply_modality_lut(values, dataset), dtype=np.float32)
        window = _first_window(dataset)
        if window is None:
            grey = _percentile_window(mapped, _sample(stored, dataset))
        else:
            function = str(dataset.get("VOILUTFunction", "LINEAR")).upper()
            grey = window_values(mapped, *window, function=function)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 1.0 - grey
    return np.clip(grey, 0.0, 1.0).astype(np.float32, copy=False)


def window_values(
    values: np.ndarray, center: float, width: float, *, function: str = "LINEAR"
) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing to 0..1."""
    values = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _first_window(dataset: Dataset) -> tuple[float, float] | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    center = center[0] if _is_multi(center) else center
    width = width[0] if _is_multi(width) else width
    try:
        c, w = float(center), float(width)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(c) and math.isfinite(w)) or w <= 0:
        return None
    return c, w


def _is_multi(value: object) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _voi_lut(stored: np.ndarray, dataset: Dataset) -> np.ndarray:
    mapped = np.asarray(apply_voi_lut(apply_modality_lut(stored, dataset), dataset), np.float32)
    bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
    return mapped / float(2**bits - 1)


def _sample(stored: np.ndarray, dataset: Dataset) -> np.ndarray:
    """About 512 x 512 of the image's modality values, for the percentile window."""
    sample = stored[:: max(1, stored.shape[0] // 512), :: max(1, stored.shape[1] // 512)]
    return np.asarray(apply_modality_lut(sample, dataset), dtype=np.float32)


def _percentile_window(values: np.ndarray, sample: np.ndarray) -> np.ndarray:
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _transfer_syntax(dataset: Dataset) -> str:
    meta = getattr(dataset, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "unknown"))


def scale_factor(rows: int, columns: int, max_pixels: int) -> int:
    """Smallest integer factor that brings the image to at most ``max_pixels`` pixels."""
    if max_pixels < 1:
        raise ValueError(f'Argument "max_pixels" should be >= 1, got {max_pixels!r}.')
    factor = 1
    while math.ceil(rows / factor) * math.ceil(columns / factor) > max_pixels:
        factor += 1
    return factor


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Downsample (H, W) by an integer factor; edges padded by replication (ceil sizes)."""
    if factor == 1:
        return image
    offsets = lut.block_offsets(image, factor)  # strided sums: faster than reshape().mean()
    total = next(offsets).astype(np.float32)
    for part in offsets:
        total += part
    return total / np.float32(factor * factor)
