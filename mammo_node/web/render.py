"""Stored pixels to PNG / JPEG: the DICOM greyscale pipeline, viewport scaling, hanging flips.

Greyscale pipeline (PS3.3 C.11): Modality LUT / Rescale (``apply_modality_lut``), then the VOI
transform - a window given by the request, else the VOI LUT Sequence (``apply_voi_lut``), else the
image's first Window Center / Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID),
else the 0.5-99.5 percentile range - then MONOCHROME1 (or Presentation LUT Shape INVERSE on a
MONOCHROME2 image) is inverted so that dense tissue is bright. Colour images are passed through.

Hanging protocol (:func:`hanging_flips`): right breasts are shown on the left of the screen with
the chest wall on the image's right edge, left breasts on the right with the chest wall on the
left edge, so that the two breasts meet back to back in the middle; MLO views with the axilla up,
CC views with the lateral side up. The flips follow from Patient Orientation (0020,0020); an
image without it is judged from its pixels (the chest wall side is the brighter one).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from pydicom import Dataset, dcmread
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mammo_node.errors import PixelDataError
from mammo_node.scrub import describe

MEDIA_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class Flips:
    horizontal: bool
    vertical: bool


def parse_window(text: str | None) -> Window | None:
    """``center,width[,function]`` as PS3.18 8.3.5.1.3 gives it; raises ValueError if bad."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"window={text!r}: expected center,width[,function]")
    center, width = float(parts[0]), float(parts[1])
    function = parts[2].upper() if len(parts) == 3 else "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ValueError(f"window function {parts[2]!r}: expected linear, linear_exact or sigmoid")
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise ValueError(f"window={text!r}: width must be > 0")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """``vw,vh`` (the rendered image fits inside, aspect kept); source-region forms refused."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ValueError(f"viewport={text!r}: only vw,vh is supported")
    width, height = int(parts[0]), int(parts[1])
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise ValueError(f"viewport={text!r}: sizes must be 1..8192")
    return width, height


def window_values(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing to 0..1."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))).astype(np.float32)
    if window.function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    if w <= 1:
        return (values > c - 0.5).astype(np.float32)
    return np.clip((values - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0)


def _first(value: object) -> object:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None  # type: ignore[index,arg-type]
    return value


def image_window(ds: Dataset) -> Window | None:
    try:
        center = float(_first(ds.get("WindowCenter")))  # type: ignore[arg-type]
        width = float(_first(ds.get("WindowWidth")))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(center, width, function if function in ("LINEAR_EXACT", "SIGMOID") else "LINEAR")


def _percentile(values: np.ndarray) -> np.ndarray:
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def frame_pixels(ds: Dataset, frame: int = 1) -> np.ndarray:
    """The stored values of one frame (1-based); raises PixelDataError."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise PixelDataError(f"frame {frame} requested; the instance has {frames} frame(s)")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise PixelDataError(f"instance {ds.get('SOPInstanceUID')} has no pixel data")
    try:
        array = ds.pixel_array
    except Exception as exc:  # decoders raise many types
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise PixelDataError(
            f"pixel data of {ds.get('SOPInstanceUID')} cannot be decoded ({ts}): {describe(exc)}"
        ) from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        array = array[frame - 1]
    if (samples == 1 and array.ndim != 2) or (samples > 1 and array.ndim != 3):
        raise PixelDataError(f"unexpected pixel array shape {array.shape}")
    return np.asarray(array)


def display_image(ds: Dataset, frame: int = 1, window: Window | None = None) -> np.ndarray:
    """8-bit display values: (H, W) greyscale, or (H, W, 3) for colour images."""
    stored = frame_pixels(ds, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if stored.ndim == 3:
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            stored = convert_color_space(stored, photometric, "RGB")
        return _to_uint8(stored.astype(np.float32) / (2 ** int(ds.BitsStored) - 1))
    if window is None and "VOILUTSequence" in ds:
        mapped = np.asarray(apply_voi_lut(apply_modality_lut(stored, ds), ds), np.float32)
        grey = mapped / float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    else:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        window = window or image_window(ds)
        grey = _percentile(values) if window is None else window_values(values, window)
    shape = str(ds.get("PresentationLUTShape", "")).upper()
    if photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE"):
        grey = 1.0 - grey
    return _to_uint8(grey)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def fitted_size(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) scaled down (never up) to fit inside ``box``, aspect kept."""
    scale = min(box[0] / width, box[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    """Scale down (never up) to fit inside ``box`` = (width, height), aspect kept."""
    size = fitted_size(image.width, image.height, box)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def mask_overlay(
    mask: np.ndarray, size: tuple[int, int], colour: tuple[int, int, int] = (255, 128, 32)
) -> Image.Image:
    """RGBA picture of a binary mask at ``size``: translucent fill, opaque outline."""
    scaled = Image.fromarray((mask > 0).astype(np.uint8) * 255, "L").resize(
        size, Image.Resampling.BILINEAR
    )
    fill = np.asarray(scaled, dtype=np.float32) / 255.0
    grown = np.asarray(scaled.filter(ImageFilter.MaxFilter(3)), dtype=np.float32) / 255.0
    shrunk = np.asarray(scaled.filter(ImageFilter.MinFilter(3)), dtype=np.float32) / 255.0
    outline = np.clip(grown - shrunk, 0.0, 1.0)
    alpha = np.clip(0.35 * fill + 0.95 * outline, 0.0, 1.0)
    rgba = np.zeros((*alpha.shape, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.rint(alpha * 255.0).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def encode(pixels: np.ndarray, media_type: str, *, quality: int = 90) -> bytes:
    return encode_image(Image.fromarray(pixels), media_type, quality=quality)


def encode_image(image: Image.Image, media_type: str, *, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    fmt = MEDIA_FORMATS[media_type]
    if fmt == "JPEG":
        image.save(buffer, fmt, quality=quality)
    else:
        image.save(buffer, fmt, compress_level=3)
    return buffer.getvalue()


def render_file(
    path: Path,
    media_type: str,
    *,
    frame: int = 1,
    window: Window | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = 90,
) -> bytes:
    """A PS3.18 rendered frame of a stored file."""
    try:
        ds = dcmread(path)
    except Exception as exc:  # pydicom raises many types on malformed files
        raise PixelDataError(f"cannot read {path.name}: {describe(exc)}") from exc
    image = Image.fromarray(display_image(ds, frame, window))
    if viewport is not None:
        image = fit(image, viewport)
    return encode_image(image, media_type, quality=quality)


# --- hanging protocol ------------------------------------------------------------------------
def hanging_flips(
    laterality: str | None,
    view: str | None,
    orientation: list[str] | None,
    pixels: np.ndarray | None = None,
) -> Flips:
    """Flips that hang an image as described in the module docstring."""
    row_dir = col_dir = ""
    if orientation and len(orientation) == 2:
        row_dir, col_dir = (str(v).upper() for v in orientation)
    horizontal = False
    if laterality in ("L", "R"):
        # R: chest wall (posterior) at the right edge: rows run towards P; L: towards A
        wanted, opposite = ("P", "A") if laterality == "R" else ("A", "P")
        if opposite in row_dir and wanted not in row_dir:
            horizontal = True
        elif wanted not in row_dir and pixels is not None:
            horizontal = _chest_wall_side(pixels) != ("right" if laterality == "R" else "left")
    vertical = False
    if view == "MLO" and "H" in col_dir:
        vertical = True  # axilla (head) should be up, so down must run towards the feet
    elif view == "CC" and laterality in ("L", "R") and laterality in col_dir:
        vertical = True  # down runs towards the breast's own (lateral) side: turn it over
    return Flips(horizontal, vertical)


def _chest_wall_side(pixels: np.ndarray) -> str:
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    band = max(1, grey.shape[1] // 10)
    left = float(grey[:, :band].mean())
    right = float(grey[:, -band:].mean())
    return "left" if left >= right else "right"


def apply_flips(image: Image.Image, flips: Flips) -> Image.Image:
    if flips.horizontal:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flips.vertical:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def write_atomically(path: Path, data: bytes) -> None:
    """Cache files: temp file in the same folder, then rename (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
