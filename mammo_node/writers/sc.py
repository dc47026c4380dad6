"""RGB Secondary Capture per view: mammogram + saliency heat map + ROI box + COA + scores.

What is drawn, in this order (later on top):
- the mammogram as a viewer shows it (:mod:`mammo_node.writers.display`: VOI window,
  MONOCHROME1 inverted), in the stored pixel grid of the source - right breasts stay mirrored
  exactly as the detector stored them, so the SC lies on the source pixel for pixel;
- the saliency as a jet-like heat map, transparent below 0.25 and at most 55 % opaque, so the
  tissue under it stays visible;
- the text (view, image / breast / exam score, verdict, model name and version, DEMO notice)
  in white on a black panel, in the top or bottom corner of the side away from the breast and
  away from the ROI, sized to the image with Pillow's built-in scalable font;
- the centre of attention as a magenta cross, then the ROI box as a pure green
  (0, 255, 0) outline on the inside of the box's edge pixels (never covered by anything).

Size. The SC keeps the stored grid unless it has more than ``max_pixels`` pixels (default
6 000 000, i.e. 18 MB of RGB): then it is reduced by the smallest integer factor ``f`` that fits
(the mammogram by block mean; the heat map sampled once from the model's map at each SC pixel's
centre, :class:`~mammo_node.writers.saliency_grid.BlockSampler`, and blended in bands of rows,
never a whole float image; the text is drawn on its panel alone, so the SC never goes through
Pillow as a whole). A 3328x4096 detector image (13.6 MP) would otherwise be a 41 MB SC per view,
164 MB per exam to push to every destination - several times the four source images - while the
heat map comes from a 976-pixel-wide model input and a viewer shows about 2-5 MP per view
anyway. With ``f = 2`` that image becomes 1664x2048 (10 MB); 2294x1914 images (4.4 MP) keep full
size. Under a factor ``f`` a stored pixel (x, y) lands on SC pixel (x // f, y // f); Pixel
Spacing is scaled by ``f``, PatientOrientation is unchanged.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from functools import partial

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

import mammo_node
from mammo_node.config import DEFAULT_SC_MAX_PIXELS
from mammo_node.domain import ExamInference, Laterality
from mammo_node.errors import OutputError
from mammo_node.writers import codes
from mammo_node.writers.display import scale_factor
from mammo_node.writers.identity import OutputIdentity
from mammo_node.writers.saliency_grid import BlockSampler
from mammo_node.writers.sources import (
    ScoredView,
    contributing_equipment,
    patient_orientation,
    pixel_spacing,
)

DEFAULT_MAX_PIXELS = DEFAULT_SC_MAX_PIXELS  # MAMMO_SC_MAX_PIXELS's default
BOX_RGB = (0, 255, 0)
COA_RGB = (255, 0, 255)
TEXT_RGB = (255, 255, 255)
DEMO_RGB = (255, 220, 0)
HEAT_FLOOR = 0.25
HEAT_MAX_ALPHA = 0.55
# jet-like anchors (saliency -> RGB): blue, cyan, yellow, red
_HEAT_ANCHORS = (
    (0.25, (0, 64, 255)),
    (0.50, (0, 230, 255)),
    (0.75, (255, 230, 0)),
    (1.00, (255, 0, 0)),
)


def heat_lut() -> tuple[np.ndarray, np.ndarray]:
    """Per saliency level 0..255: colour already multiplied by its opacity (256, 3), and
    the opacity left to the grey image (256,)."""
    x = np.linspace(0.0, 1.0, 256)
    stops = np.array([a for a, _ in _HEAT_ANCHORS])
    colours = np.array([c for _, c in _HEAT_ANCHORS], dtype=np.float64)
    colour = np.stack([np.interp(x, stops, colours[:, k]) for k in range(3)], axis=1)
    alpha = HEAT_MAX_ALPHA * np.clip((x - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0, 1.0)
    return (colour * alpha[:, None]).astype(np.float32), (1.0 - alpha).astype(np.float32)


def blend_table() -> np.ndarray:
    """The blended pixel for every (saliency level, grey level) pair: (65536, 3) uint8 RGB,
    indexed by ``level << 8 | grey``."""
    premultiplied, grey_weight = heat_lut()
    grey = np.arange(256, dtype=np.float32)
    rgb = grey[None, :, None] * grey_weight[:, None, None] + premultiplied[:, None, :]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)


_BLENDED = blend_table()
#: SC pixels a band of :func:`_blend_heat` holds as float32 (256 KiB: its temporaries stay in
#: this machine's 2 MiB L2; the whole 1664x2048 image at once was 28 -> 16 ms in bands)
_BAND_PIXELS = 1 << 16


@dataclass(frozen=True)
class Rendering:
    pixels: np.ndarray  # (H, W, 3) uint8
    factor: int  # stored pixel (x, y) -> SC pixel (x // factor, y // factor)


def box_in_sc(roi: tuple[int, int, int, int], factor: int) -> tuple[int, int, int, int]:
    """ROI (x0, y0, x1, y1 exclusive) in the SC grid: the SC pixels it touches."""
    x0, y0, x1, y1 = roi
    return x0 // factor, y0 // factor, math.ceil(x1 / factor), math.ceil(y1 / factor)


def render(view: ScoredView, inference: ExamInference, *, max_pixels: int) -> Rendering:
    factor = scale_factor(view.rows, view.columns, max_pixels)
    grey = view.display(factor)
    box = box_in_sc(view.result.roi, factor)
    rgb = _blend_heat(grey, BlockSampler(view.result.saliency, factor))
    _draw_text(rgb, grey, box, _lines(view, inference))
    line = max(1, round(min(rgb.shape[:2]) / 250))
    cx, cy = view.result.coa
    _draw_cross(rgb, int(cx // factor), int(cy // factor), line)
    _draw_box(rgb, box, line)  # last: the box is never covered
    return Rendering(rgb, factor)


def _blend_heat(grey: np.ndarray, saliency: BlockSampler) -> np.ndarray:
    """(H, W, 3) uint8: grey (0..1) with the heat colour of the saliency (0..1, sampled on the
    same grid) blended in: both rounded to 256 levels, then one lookup per pixel in
    :func:`blend_table`; in bands of rows, so the saliency and the codes are never whole
    float images."""
    rows, columns = grey.shape
    if saliency.shape != grey.shape:
        raise OutputError(f"Saliency grid {saliency.shape} does not match the SC {grey.shape}.")
    rgb = np.empty((rows, columns, 3), np.uint8)
    band = max(1, _BAND_PIXELS // max(1, columns))
    scaled = np.empty((band, columns), np.float32)
    code = np.empty((band, columns), np.uint16)
    grey_code = np.empty((band, columns), np.uint16)
    for top in range(0, rows, band):
        bottom = min(rows, top + band)
        n = bottom - top
        part, level, grey_level = scaled[:n], code[:n], grey_code[:n]
        np.multiply(saliency.rows(top, bottom), np.float32(255.0), out=part)
        np.rint(part, out=part)
        level[...] = part
        level <<= 8
        np.multiply(grey[top:bottom], np.float32(255.0), out=part)
        np.rint(part, out=part)
        grey_level[...] = part
        level |= grey_level
        np.take(_BLENDED, level, axis=0, out=rgb[top:bottom], mode="clip")  # all 65536 codes
    return rgb


def _draw_box(rgb: np.ndarray, box: tuple[int, int, int, int], line: int) -> None:
    x0, y0, x1, y1 = box
    t = max(1, min(line, (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2))
    rgb[y0 : y0 + t, x0:x1] = BOX_RGB
    rgb[y1 - t : y1, x0:x1] = BOX_RGB
    rgb[y0:y1, x0 : x0 + t] = BOX_RGB
    rgb[y0:y1, x1 - t : x1] = BOX_RGB


def _draw_cross(rgb: np.ndarray, x: int, y: int, line: int) -> None:
    rows, cols = rgb.shape[:2]
    x, y = min(max(x, 0), cols - 1), min(max(y, 0), rows - 1)
    arm = max(3, min(rows, cols) // 40)
    half = line // 2
    rgb[max(0, y - half) : y - half + line, max(0, x - arm) : x + arm + 1] = COA_RGB
    rgb[max(0, y - arm) : y + arm + 1, max(0, x - half) : x - half + line] = COA_RGB


def _lines(view: ScoredView, inference: ExamInference) -> list[tuple[str, tuple[int, int, int]]]:
    """ASCII text lines with their colours."""
    bundle, scores = inference.bundle, inference.scores
    fmt = partial(codes.format_score, bundle)
    agg = partial(codes.format_aggregate, bundle)  # sums of view scores: never a % probability
    kind = "" if codes.is_probability(bundle) else " (uncalibrated)"
    texts = [f"{view.slot}  image score {fmt(view.result.ensemble)}{kind}"]
    if inference.probability is not None:
        texts.append(f"exam probability {inference.probability * 100:.1f} % (calibrated)")
    if inference.category is not None:
        texts.append(f"category {inference.category} of 10")
    breasts = [
        f"breast {lat.value} {agg(scores.breast_scores[lat])}"
        for lat in (Laterality.L, Laterality.R)
        if lat in scores.breast_scores
    ]
    if breasts:
        texts.append(" | ".join(breasts))
    texts.append(f"exam score {agg(scores.exam_score)}")
    for point in bundle.operating_points:
        hit = inference.verdicts.get(point.name, scores.exam_score >= point.threshold)
        word, sign = ("RECALL suggested", ">=") if hit else ("recall not suggested", "<")
        texts.append(f"{word} at {point.name} (exam {sign} {agg(point.threshold)})")
    texts.append(f"model {bundle.name} {bundle.version}")
    lines = [(text, TEXT_RGB) for text in texts]
    if bundle.is_demo:
        lines.append(("DEMO - NOT FOR CLINICAL USE", DEMO_RGB))
    return lines


def _draw_text(
    rgb: np.ndarray,
    grey: np.ndarray,
    box: tuple[int, int, int, int],
    lines: list[tuple[str, tuple[int, int, int]]],
) -> None:
    """Lines on a black panel in the corner farthest from the breast and the ROI, drawn on a
    panel-sized image and copied into ``rgb`` (the whole SC never goes through Pillow)."""
    height, width = rgb.shape[:2]
    avail = width * (0.5 if width >= 400 else 0.98)
    size = max(8, int(height / 28))
    font = ImageFont.load_default(size=size)

    def room(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> float:
        """Below 1: the lines are too wide or too tall by that factor."""
        tall = _line_height(font) * len(lines)
        return min(avail / _text_width(font, lines), 0.4 * height / tall)

    # text grows in proportion to the font size: start at the size estimated to fit
    if (fit := room(font)) < 1:
        size = max(8, int(size * fit))
        font = ImageFont.load_default(size=size)
    while size > 8 and room(font) < 1:
        size -= 1
        font = ImageFont.load_default(size=size)
    pad = max(2, size // 4)
    step = _line_height(font)
    panel_w = int(_text_width(font, lines)) + 2 * pad
    panel_h = step * len(lines) + 2 * pad
    quarter = max(1, width // 4)
    left_is_dark = grey[:, :quarter].mean() <= grey[:, -quarter:].mean()
    x = 0 if left_is_dark else max(0, width - panel_w)
    roi_in_top = (box[1] + box[3]) / 2 < height / 2
    y = max(0, height - panel_h) if roi_in_top else 0
    shown_w, shown_h = min(panel_w, width - x), min(panel_h, height - y)
    panel = Image.new("RGB", (shown_w, shown_h), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    for i, (text, colour) in enumerate(lines):
        draw.text((pad, pad + i * step), text, fill=colour, font=font)
    rgb[y : y + shown_h, x : x + shown_w] = np.asarray(panel)


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, lines: list) -> float:
    return max(font.getlength(text) for text, _ in lines)


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    top, bottom = font.getbbox("Ag|")[1::2]
    return int(bottom - top) + max(2, int((bottom - top) * 0.35))


def build_secondary_capture(
    view: ScoredView,
    inference: ExamInference,
    identity: OutputIdentity,
    *,
    institution_name: str | None,
    station_name: str | None,
    now: datetime.datetime,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> hd.sc.SCImage:
    rendering = render(view, inference, max_pixels=max_pixels)
    bundle = inference.bundle
    spacing = pixel_spacing(view.header)
    orientation = patient_orientation(view.header)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=view.header,
        pixel_array=rendering.pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=codes.MANUFACTURER,
        pixel_spacing=(
            None
            if spacing is None
            else (spacing[0] * rendering.factor, spacing[1] * rendering.factor)
        ),
        # highdicom accepts single letters only; the real (maybe compound) value is set below
        patient_orientation=("A", "R"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[
            contributing_equipment(
                bundle, institution_name=institution_name, station_name=station_name
            )
        ],
        series_description=identity.series_description,
        manufacturer_model_name=codes.MANUFACTURER,
        software_versions=mammo_node.__version__,
        institution_name=institution_name,
        content_date=now.date(),
        content_time=now.time(),
        series_date=now.date(),
        series_time=now.time(),
    )
    _finish(sc, view, bundle_label=bundle.label, factor=rendering.factor, orientation=orientation)
    if station_name:
        sc.StationName = station_name
    return sc


def _finish(
    sc: Dataset,
    view: ScoredView,
    *,
    bundle_label: str,
    factor: int,
    orientation: tuple[str, str] | None,
) -> None:
    sc.PatientOrientation = list(orientation) if orientation else ""
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "YES"
    sc.ImageLaterality = view.slot.laterality.value
    sc.LossyImageCompression = "00"
    resized = f", reduced {factor}x by block mean" if factor > 1 else ""
    sc.DerivationDescription = (
        f"Saliency heat map, region (green box) and centre (magenta cross) of attention and "
        f"scores of {bundle_label} burned into the displayed {view.slot} image{resized}."
    )[:1024]
    sc.ImageComments = f"AI result of {bundle_label}; not a diagnostic image."
    source = Dataset()
    source.ReferencedSOPClassUID = view.header.SOPClassUID
    source.ReferencedSOPInstanceUID = view.header.SOPInstanceUID
    sc.SourceImageSequence = [source]
