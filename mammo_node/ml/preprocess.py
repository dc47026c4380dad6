"""Pixels to model input, recording every geometric step so coordinates map back exactly.

Coordinates are continuous, DICOM style: the top-left corner of the top-left stored pixel is
(0.0, 0.0), its centre is (0.5, 0.5); ``x`` runs along a row (columns), ``y`` down (rows).

Steps (the paper's evaluation transform, all sizes settings):

1. decode: Modality LUT, VOI LUT / window, MONOCHROME1 inverted, scaled to 0..1 - computed
   once per possible stored value and applied as one float32 table lookup
   (:class:`IntensityTable`, :mod:`mammo_node.lut`);
2. orient: mirror horizontally so the chest wall is on the LEFT of the model's image, decided
   from PatientOrientation, else laterality, else intensity (the rule is recorded); the
   mirror is applied after each resize (resampling commutes with it), never to a full-size
   copy;
3. rescale to ``input_size`` columns (aspect kept) - the *scaled* image;
4. centre crop (or zero pad) the rows to ``input_size`` - the model's window;
5. normalise ``(v - mean) / std``.

The attention model's ROI is cut from the oriented image rescaled to ``input_size *
roi_scale`` columns - the *hires* image - whose scale is recorded in the same ``Geometry``.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mammo_node import lut
from mammo_node.domain import Laterality
from mammo_node.errors import PixelDataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessSettings:
    """Sizes and intensity normalisation shared by training and serving (stored in bundles)."""

    input_size: int = 976  # the model's square input; images are rescaled to this width
    roi_size: int = 976  # square crop fed to the attention model
    roi_scale: float = 2.0  # hires width = input_size * roi_scale
    mean: float = 0.449  # intensity normalisation after scaling to 0..1
    std: float = 0.226
    saliency_smoothing: float = 0.0  # Gaussian sigma (input px) before the COA; 0 = paper
    # How the COA is taken from the map (see mammo_node.ml.saliency.COA_RULES). A bundle
    # without the key was trained with the paper's rule, hence that default here.
    coa_rule: str = "paper"

    def __post_init__(self) -> None:
        for name in ("input_size", "roi_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f'Argument "{name}" should be an int, got {value!r}.')
            if value < 16:
                raise ValueError(f'Argument "{name}" should be at least 16, got {value}.')
        if not self.roi_scale > 0:
            raise ValueError(f'Argument "roi_scale" should be > 0, got {self.roi_scale!r}.')
        if not self.std > 0:
            raise ValueError(f'Argument "std" should be > 0, got {self.std!r}.')
        if self.coa_rule not in ("paper", "breast_region"):
            raise ValueError(
                f'Argument "coa_rule" should be "paper" or "breast_region", got {self.coa_rule!r}.'
            )
        if not self.saliency_smoothing >= 0:
            raise ValueError(
                f'Argument "saliency_smoothing" should be >= 0, got {self.saliency_smoothing!r}.'
            )

    @property
    def hires_width(self) -> int:
        return max(1, round(self.input_size * self.roi_scale))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown preprocessing setting(s) {unknown}; known: {sorted(known)}.")
        return cls(**data)


class OrientationRule(enum.StrEnum):
    """Which fact decided the horizontal flip."""

    PATIENT_ORIENTATION = "patient_orientation"
    LATERALITY = "laterality"
    INTENSITY = "intensity"


@dataclass(frozen=True)
class Geometry:
    """Every geometric step from the stored pixel grid to the model's input (and hires image).

    ``offset`` is (x, y) of the model window's top-left corner in the scaled image; a negative
    value means zero padding.
    """

    stored_shape: tuple[int, int]  # (Rows, Columns)
    flipped: bool
    orientation_rule: OrientationRule
    scaled_shape: tuple[int, int]  # (rows, columns) after rescaling to input width
    offset: tuple[int, int]  # (x, y)
    input_shape: tuple[int, int]  # (rows, columns) of the model's input
    hires_shape: tuple[int, int] | None = None  # (rows, columns) of the ROI source image

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) scale factors from stored to scaled pixels."""
        return (
            self.scaled_shape[1] / self.stored_shape[1],
            self.scaled_shape[0] / self.stored_shape[0],
        )

    @property
    def hires_scale(self) -> tuple[float, float]:
        if self.hires_shape is None:
            raise ValueError("This geometry has no hires image (prepared without with_hires).")
        return (
            self.hires_shape[1] / self.stored_shape[1],
            self.hires_shape[0] / self.stored_shape[0],
        )

    def _orient(self, x: Any) -> Any:
        return self.stored_shape[1] - x if self.flipped else x

    def to_model(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Stored (x, y) -> model input (x, y). Works on floats and numpy arrays."""
        sx, sy = self.scale
        return self._orient(x) * sx - self.offset[0], y * sy - self.offset[1]

    def to_stored(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Model input (x, y) -> stored (x, y): the exact inverse of ``to_model``."""
        sx, sy = self.scale
        return self._orient((x + self.offset[0]) / sx), (y + self.offset[1]) / sy

    def to_hires(self, x: Any, y: Any) -> tuple[Any, Any]:
        hx, hy = self.hires_scale
        return self._orient(x) * hx, y * hy

    def hires_to_stored(self, x: Any, y: Any) -> tuple[Any, Any]:
        hx, hy = self.hires_scale
        return self._orient(x / hx), y / hy

    def saliency_to_stored(self, saliency: np.ndarray | torch.Tensor) -> np.ndarray:
        """A map on the model's input grid -> float32 (Rows, Columns) on the stored grid.

        Undoes crop/pad (outside the window is 0), rescale (bilinear, same pixel-centre
        convention as the forward resize) and the flip.
        """
        smap = torch.as_tensor(saliency, dtype=torch.float32).detach().cpu()
        return self.saliency_on_stored_grid(smap).numpy()

    def saliency_on_stored_grid(self, smap: torch.Tensor) -> torch.Tensor:
        """``saliency_to_stored`` as torch ops on the map's own device (no host round trip):
        :meth:`saliency_on_scaled_grid` upsampled (bilinear) to the stored grid."""
        canvas = self.saliency_on_scaled_grid(smap)
        return F.interpolate(
            canvas[None, None], size=self.stored_shape, mode="bilinear", align_corners=False
        )[0, 0]

    def saliency_on_scaled_grid(self, smap: torch.Tensor) -> torch.Tensor:
        """A map on the model's input grid -> float32 on the rescaled grid (``scaled_shape``)
        in the stored orientation, on the map's device: the crop/pad undone (0 outside the
        model's window) and the flip undone. That grid spans the whole stored image, so this
        is the map the writers resample (:class:`mammo_node.domain.SaliencyMap`); bilinear
        resampling commutes with the mirror, so no full-size copy is made for it."""
        if tuple(smap.shape) != self.input_shape:
            raise ValueError(
                f'Argument "saliency" should have shape {self.input_shape}, '
                f"got {tuple(smap.shape)}."
            )
        smap = smap.detach().to(torch.float32)
        canvas = torch.zeros(self.scaled_shape, dtype=torch.float32, device=smap.device)
        ox, oy = self.offset
        y0, y1 = max(0, oy), min(self.scaled_shape[0], oy + self.input_shape[0])
        x0, x1 = max(0, ox), min(self.scaled_shape[1], ox + self.input_shape[1])
        canvas[y0:y1, x0:x1] = smap[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        if self.flipped:
            canvas = torch.flip(canvas, dims=(1,))
        return canvas

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["orientation_rule"] = self.orientation_rule.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        hires = data.get("hires_shape")
        return cls(
            stored_shape=tuple(data["stored_shape"]),  # type: ignore[arg-type]
            flipped=bool(data["flipped"]),
            orientation_rule=OrientationRule(data["orientation_rule"]),
            scaled_shape=tuple(data["scaled_shape"]),  # type: ignore[arg-type]
            offset=tuple(data["offset"]),  # type: ignore[arg-type]
            input_shape=tuple(data["input_shape"]),  # type: ignore[arg-type]
            hires_shape=tuple(hires) if hires is not None else None,  # type: ignore[arg-type]
        )


@dataclass
class PreparedImage:
    """One image ready for the models.

    ``tensor`` (1, S, S) normalised; ``scaled`` the oriented 0..1 image at input width (all
    rows, for training crops); ``hires`` the oriented 0..1 image at ROI width (or None).
    """

    tensor: torch.Tensor
    geometry: Geometry
    scaled: np.ndarray = field(repr=False)
    hires: np.ndarray | None = field(default=None, repr=False)


# --- decoding ---------------------------------------------------------------------------


def decode_stored(ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame greyscale image (no LUT applied yet).

    Raises PixelDataError when the pixel data cannot be decoded or has an unsupported layout.
    """
    sop = getattr(ds, "SOPInstanceUID", "?")
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise PixelDataError(
            f"Image {sop}: PhotometricInterpretation {photometric or '(missing)'!r} is not "
            "greyscale (MONOCHROME1/2); only greyscale mammograms can be scored."
        )
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise PixelDataError(
            f"Image {sop} has {frames} frames; only single-frame images are scored."
        )
    try:
        raw = ds.pixel_array
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise PixelDataError(
            f"Pixel data of image {sop} (transfer syntax {syntax}) cannot be decoded: {exc}"
        ) from exc
    if raw.ndim != 2:
        raise PixelDataError(f"Image {sop}: decoded pixel array has shape {raw.shape}, not 2-D.")
    return raw


def _lut_values(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT then the first VOI LUT / window (pydicom's rules), as float32."""
    out = apply_modality_lut(values, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        out = apply_voi_lut(out, ds)
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class IntensityTable:
    """Stored value -> display value 0..1 (Modality LUT, VOI, min-max, MONOCHROME1), as one
    float32 table indexed by the stored value's 8- or 16-bit pattern (see mammo_node.lut):
    the same float32 values as running pydicom's LUTs over the whole image, in one pass."""

    values: np.ndarray  # float32 (256,) or (65536,)

    @property
    def bits(self) -> int:
        return 8 if self.values.shape[0] == 256 else 16

    def patterns(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` reinterpreted as the unsigned patterns the table is indexed by (no copy)."""
        return lut.patterns(raw)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """float32 0..1 image (host)."""
        return lut.lookup(self.values, raw)


def intensity_table(ds: Dataset, raw: np.ndarray) -> IntensityTable | None:
    """The table for ``raw`` (8- or 16-bit integer pixels); None for other pixel types.
    Min-max runs over the values present (``mammo_node.lut.present_range``)."""
    if not lut.has_table(raw):
        return None
    mapped = lut.build(raw, lambda values: _lut_values(values, ds))
    lo, hi = lut.present_range(raw, mapped)
    if not math.isfinite(lo) or not math.isfinite(hi):
        raise PixelDataError("Pixel values contain NaN or infinity.")
    # the same float32 operations as normalise_intensity, once per value
    table = np.zeros_like(mapped) if hi <= lo else (mapped - lo) / (hi - lo)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        table = 1.0 - table
    return IntensityTable(lut.by_pattern(table, raw.dtype))


def load_pixels(ds: Dataset) -> np.ndarray:
    """Decode a single-frame greyscale image to float32 0..1 as displayed (bright = dense).

    Applies the Modality LUT, the first VOI LUT / window, and inverts MONOCHROME1. Raises
    PixelDataError when the pixel data cannot be decoded or has an unsupported layout.
    """
    raw = decode_stored(ds)
    table = intensity_table(ds, raw)
    if table is not None:
        return table.apply(raw)
    pixels = normalise_intensity(_lut_values(raw, ds))  # 32-bit or float pixels: rare
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def normalise_intensity(values: np.ndarray) -> np.ndarray:
    """Min-max scale to float32 0..1 (a constant image becomes all zeros)."""
    values = np.asarray(values, dtype=np.float32)
    lo, hi = float(values.min()), float(values.max())
    if not math.isfinite(lo) or not math.isfinite(hi):
        raise PixelDataError("Pixel values contain NaN or infinity.")
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


# --- orientation ------------------------------------------------------------------------


def _row_direction(patient_orientation: Sequence[str] | str | None) -> str:
    if patient_orientation is None:
        return ""
    if isinstance(patient_orientation, str):
        parts = patient_orientation.split("\\")
    else:
        parts = [str(p) for p in patient_orientation]
    return parts[0].strip().upper() if parts else ""


def decide_flip(
    pixels: np.ndarray | torch.Tensor,
    *,
    laterality: Laterality | str | None,
    patient_orientation: Sequence[str] | str | None,
) -> tuple[bool, OrientationRule]:
    """Whether to mirror so the chest wall lands on the left, and the rule that decided.

    PatientOrientation's first value is the patient direction of increasing column: A (toward
    the nipple) means the chest wall is already left, P means it is right. Without it, the
    hanging convention: left breasts have the chest wall on the left, right breasts on the
    right. Without both, the brighter edge (tissue meets the chest wall) is the chest wall.
    """
    row = _row_direction(patient_orientation)
    if ("A" in row) != ("P" in row):
        return "P" in row, OrientationRule.PATIENT_ORIENTATION
    if laterality is not None and str(laterality).strip():
        lat = Laterality(str(laterality).strip().upper())
        return lat is Laterality.R, OrientationRule.LATERALITY
    band = max(1, pixels.shape[1] // 10)
    left, right = float(pixels[:, :band].mean()), float(pixels[:, -band:].mean())
    return right > left, OrientationRule.INTENSITY


# --- resizing and windows ---------------------------------------------------------------


def resize(image: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking), pixel-centre convention, float32."""
    if isinstance(image, torch.Tensor):
        tensor = image.to(torch.float32)
    else:
        tensor = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    if tuple(tensor.shape) == shape:
        return tensor.clone()
    shrinking = shape[0] < tensor.shape[0] or shape[1] < tensor.shape[1]
    out = F.interpolate(
        tensor[None, None], size=shape, mode="bilinear", align_corners=False, antialias=shrinking
    )
    return out[0, 0].clamp_(0.0, 1.0)


def shape_at_width(shape: tuple[int, int], width: int) -> tuple[int, int]:
    """(rows, columns) of an image of ``shape`` rescaled to ``width`` columns, aspect kept."""
    rows, cols = shape
    return max(1, round(rows * width / cols)), width


def window_offset(scaled_shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(x, y) of a centred size x size window in the scaled image (negative = padding)."""
    return (scaled_shape[1] - size) // 2, (scaled_shape[0] - size) // 2


def cut_window(image: torch.Tensor, x0: int, y0: int, size: int) -> torch.Tensor:
    """A size x size window at (x0, y0) of a 2-D image, zero outside the image."""
    out = torch.zeros((size, size), dtype=image.dtype, device=image.device)
    ys, ye = max(0, y0), min(image.shape[0], y0 + size)
    xs, xe = max(0, x0), min(image.shape[1], x0 + size)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out


def normalise(window: torch.Tensor, settings: PreprocessSettings) -> torch.Tensor:
    """0..1 window -> the model's (1, H, W) input."""
    return ((window.to(torch.float32) - settings.mean) / settings.std).unsqueeze(0)


def eval_tensor(scaled: np.ndarray | torch.Tensor, settings: PreprocessSettings) -> torch.Tensor:
    """The evaluation input (centre crop / pad) from a scaled image; used by trainer and node."""
    if isinstance(scaled, torch.Tensor):
        image = scaled.detach().to(torch.float32)
    else:  # a copy: cached arrays are read-only memory maps
        image = torch.from_numpy(np.array(scaled, dtype=np.float32))
    x0, y0 = window_offset(tuple(image.shape), settings.input_size)  # type: ignore[arg-type]
    return normalise(cut_window(image, x0, y0, settings.input_size), settings)


# --- the evaluation path ----------------------------------------------------------------


def plan_geometry(
    stored_shape: tuple[int, int],
    flipped: bool,
    rule: OrientationRule,
    settings: PreprocessSettings,
) -> Geometry:
    """Every size and offset of the evaluation transform for an image of ``stored_shape``.

    The hires grid is recorded even when its pixels are not made (the trainer cuts ROIs
    later from the same geometry).
    """
    scaled_shape = shape_at_width(stored_shape, settings.input_size)
    size = settings.input_size
    return Geometry(
        stored_shape=stored_shape,
        flipped=flipped,
        orientation_rule=rule,
        scaled_shape=scaled_shape,
        offset=window_offset(scaled_shape, size),
        input_shape=(size, size),
        hires_shape=shape_at_width(stored_shape, settings.hires_width),
    )


def scale_views(
    pixels: torch.Tensor, geometry: Geometry, *, with_hires: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The full-size 0..1 image (stored orientation, any device) -> (scaled image, oriented;
    hires image in the STORED orientation, or None).

    Each resize reads the full-size image once; the mirror is applied to the scaled result
    (resampling commutes with it), never to a full-size copy. The hires image stays
    unmirrored: :func:`mammo_node.ml.roi.cut_rois` reads its window through the mirror.
    """
    scaled = resize(pixels, geometry.scaled_shape)
    if geometry.flipped:
        scaled = torch.flip(scaled, dims=(1,))
    hires = None
    if with_hires:
        assert geometry.hires_shape is not None
        hires = resize(pixels, geometry.hires_shape)
    return scaled, hires


def preprocess(
    source: Dataset | np.ndarray,
    *,
    laterality: Laterality | str | None,
    patient_orientation: Sequence[str] | str | None = None,
    settings: PreprocessSettings,
    with_hires: bool = True,
) -> PreparedImage:
    """A DICOM dataset (or a 2-D array of display values) -> the model's evaluation input.

    For a dataset, ``patient_orientation`` defaults to its PatientOrientation tag. Arrays are
    min-max scaled to 0..1. The full-size array is dropped before returning. (The node's
    scorer runs the same steps on its device: ``mammo_node.ml.inference``.)
    """
    if isinstance(source, Dataset):
        pixels = load_pixels(source)
        if patient_orientation is None:
            patient_orientation = source.get("PatientOrientation")
    else:
        array = np.asarray(source)
        if array.ndim != 2 or min(array.shape) < 2:
            raise PixelDataError(f"Expected a 2-D greyscale image, got shape {array.shape}.")
        pixels = normalise_intensity(array)
    flipped, rule = decide_flip(
        pixels, laterality=laterality, patient_orientation=patient_orientation
    )
    stored_shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    geometry = plan_geometry(stored_shape, flipped, rule, settings)
    scaled, hires = scale_views(torch.from_numpy(pixels), geometry, with_hires=with_hires)
    del pixels
    if hires is not None and flipped:
        hires = torch.flip(hires, dims=(1,))
    return PreparedImage(
        tensor=eval_tensor(scaled, settings),
        geometry=geometry,
        scaled=scaled.numpy(),
        hires=None if hires is None else hires.numpy(),
    )


# --- the scorer's path: on the model's device -------------------------------------------


@dataclass
class DeviceImage:
    """One view prepared on the model's device: ``tensor`` (1, S, S) normalised, ``hires``
    in the STORED orientation (see :func:`scale_views`), seconds of ``load`` (host decode)
    and ``preprocess``."""

    geometry: Geometry
    tensor: torch.Tensor
    hires: torch.Tensor | None
    timings: dict[str, float]


def display_pixels(ds: Dataset, device: torch.device) -> torch.Tensor:
    """Decode on the host, then the one intensity pass: float32 0..1 (Rows, Columns) on
    ``device``. On CUDA the 16-bit stored values travel as they are (half the bytes of
    float32) from pinned memory without waiting, and the table lookup runs on the device."""
    raw = decode_stored(ds)
    table = intensity_table(ds, raw)
    if table is None:  # 32-bit or float pixels (rare): the host path
        return torch.from_numpy(load_pixels(ds)).to(device)
    if device.type != "cuda":
        return torch.from_numpy(table.apply(raw))
    # torch has no full uint16 support: the same bits as int16, masked back after widening
    patterns = table.patterns(raw)
    host = torch.from_numpy(patterns.view(np.int16) if table.bits == 16 else patterns)
    upload = host.pin_memory().to(device, non_blocking=True)
    lut = torch.from_numpy(table.values).pin_memory().to(device, non_blocking=True)
    return lut[upload.to(torch.int32) & ((1 << table.bits) - 1)]


def prepare_on_device(
    ds: Dataset,
    *,
    laterality: Laterality | str | None,
    settings: PreprocessSettings,
    device: torch.device,
) -> DeviceImage:
    """:func:`preprocess` of a dataset with torch ops on ``device`` (the same values within
    float rounding, see tests/test_ml_preprocess_reference.py); the hires image stays in the
    stored orientation and on the device."""
    t0 = time.perf_counter()
    raw = decode_stored(ds)  # pydicom caches the array: display_pixels does not decode again
    t1 = time.perf_counter()
    del raw
    pixels = display_pixels(ds, device)
    flipped, rule = decide_flip(
        pixels, laterality=laterality, patient_orientation=ds.get("PatientOrientation")
    )
    stored_shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    geometry = plan_geometry(stored_shape, flipped, rule, settings)
    scaled, hires = scale_views(pixels, geometry, with_hires=True)
    del pixels
    tensor = eval_tensor(scaled, settings)
    timings = {"load": t1 - t0, "preprocess": time.perf_counter() - t1}
    return DeviceImage(geometry, tensor, hires, timings)


# --- the training path ------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """The paper's training transform: random flip, rotation and crop."""

    vertical_flip: float = 0.5  # probability; keeps the chest wall on its side
    horizontal_flip: float = 0.0  # off by default: orientation is normalised
    max_rotation: float = 10.0  # degrees, uniform in [-max, max]
    max_shift: float = 0.05  # extra random shift, as a fraction of the output size


def train_tensor(
    image: np.ndarray | torch.Tensor,
    *,
    size: int,
    settings: PreprocessSettings,
    augmentation: Augmentation,
    generator: torch.Generator,
) -> torch.Tensor:
    """A random size x size training input from an oriented 0..1 image (zero padded)."""
    import torchvision.transforms.v2.functional as TF

    img = torch.as_tensor(np.asarray(image), dtype=torch.float32)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    if uniform(0, 1) < augmentation.vertical_flip:
        img = torch.flip(img, dims=(0,))
    if uniform(0, 1) < augmentation.horizontal_flip:
        img = torch.flip(img, dims=(1,))
    if augmentation.max_rotation > 0:
        angle = uniform(-augmentation.max_rotation, augmentation.max_rotation)
        img = TF.rotate(img[None], angle, interpolation=TF.InterpolationMode.BILINEAR)[0]
    shift = round(augmentation.max_shift * size)
    x_room = img.shape[1] - size
    y_room = img.shape[0] - size
    x0 = round(uniform(min(0, x_room) - shift, max(0, x_room) + shift))
    y0 = round(uniform(min(0, y_room) - shift, max(0, y_room) + shift))
    return normalise(cut_window(img, x0, y0, size), settings)
