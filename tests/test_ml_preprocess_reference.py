"""The scorer's preprocessing (one float32 table lookup, torch ops on the model's device)
against a straightforward reference: pydicom's full-size LUTs, a mirrored copy of the image,
resizes of that copy, the ROI cut from the mirrored hires image, the saliency mirrored after
the upsample. Same values within float rounding, same integer ROI origins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mammo_node.ml.preprocess import (
    PreprocessSettings,
    decide_flip,
    load_pixels,
    prepare_on_device,
    shape_at_width,
    window_offset,
)
from mammo_node.ml.roi import cut_roi, cut_roi_window, roi_from_origin, roi_origin_tensor
from tests.helpers.mg import breast_phantom, mg_dataset

SETTINGS = PreprocessSettings(input_size=48, roi_size=40, roi_scale=2.0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_pixels(ds: Dataset) -> np.ndarray:
    values = apply_modality_lut(ds.pixel_array, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    values = np.asarray(values, dtype=np.float32)
    lo, hi = float(values.min()), float(values.max())
    pixels = (values - lo) / (hi - lo)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def reference_resize(image: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    out = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(image))[None, None],
        size=shape,
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return out[0, 0].clamp(0.0, 1.0)


def phantom(rows: int = 90, cols: int = 70, seed: int = 0) -> np.ndarray:
    image = breast_phantom(rows, cols, seed=seed)
    image[30:34, 20:24] = 1.0  # a dense spot: the intensity extremes are not at the border
    return image


def signed(ds: Dataset) -> Dataset:
    values = ds.pixel_array.astype(np.int32) - 2048
    ds.PixelRepresentation = 1
    ds.PixelData = values.astype(np.int16).tobytes()
    return ds


def eight_bit(ds: Dataset) -> Dataset:
    values = (ds.pixel_array >> 4).astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = values.tobytes()
    return ds


def voi_lut_sequence(ds: Dataset) -> Dataset:
    """A non-monotonic VOI LUT (min-max then needs the values present, not the ends)."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    ramp = np.arange(4096)
    item.LUTData = [int(v) for v in np.where(ramp < 3000, ramp * 16, 65535 - (ramp - 3000) * 30)]
    ds.VOILUTSequence = [item]
    return ds


CASES = {
    "plain MONOCHROME2": dict(),
    "MONOCHROME1": dict(photometric="MONOCHROME1"),
    "rescale": dict(RescaleSlope=2.0, RescaleIntercept=-100.0, RescaleType="US"),
    "negative slope": dict(RescaleSlope=-0.5, RescaleIntercept=3000.0, RescaleType="US"),
    "window": dict(WindowCenter=1800.0, WindowWidth=1200.0),
    "sigmoid window": dict(WindowCenter=2000.0, WindowWidth=900.0, VOILUTFunction="SIGMOID"),
}
CHANGES = {"signed": signed, "8-bit": eight_bit, "VOI LUT sequence": voi_lut_sequence}


def build(case: str, laterality: str = "L", orientation: list[str] | None = None) -> Dataset:
    tags = dict(CASES.get(case, {}))
    image = phantom()
    if laterality == "R":
        image = image[:, ::-1].copy()
    ds = mg_dataset(laterality, "CC", display=image, PatientOrientation=orientation, **tags)
    if case in CHANGES:
        ds = CHANGES[case](ds)
    return ds


@pytest.mark.parametrize("case", [*CASES, *CHANGES])
def test_one_table_lookup_gives_the_full_size_lut_values(case: str) -> None:
    ds = build(case)
    reference = reference_pixels(ds)
    pixels = load_pixels(ds)
    assert pixels.dtype == np.float32 and pixels.shape == reference.shape
    assert np.array_equal(pixels, reference)  # the same float32 operations, once per value
    assert pixels.min() == 0.0 and pixels.max() == 1.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("case", "laterality", "orientation"),
    [
        ("plain MONOCHROME2", "L", ["A", "R"]),
        ("MONOCHROME1", "R", ["P", "L"]),  # mirrored
        ("signed", "R", None),  # mirrored by laterality
        ("window", "L", None),
    ],
)
def test_device_path_matches_the_reference(
    case: str, laterality: str, orientation: list[str] | None, device: str
) -> None:
    ds = build(case, laterality, orientation)
    prepared = prepare_on_device(
        ds, laterality=laterality, settings=SETTINGS, device=torch.device(device)
    )
    geom = prepared.geometry
    # the reference: full-size LUTs, a mirrored copy, a resize of the copy per size
    pixels = reference_pixels(ds)
    flipped, _ = decide_flip(
        pixels, laterality=laterality, patient_orientation=ds.get("PatientOrientation")
    )
    assert geom.flipped is flipped is (laterality == "R")
    oriented = pixels[:, ::-1] if flipped else pixels
    scaled = reference_resize(oriented, shape_at_width(pixels.shape, SETTINGS.input_size))
    hires = reference_resize(oriented, shape_at_width(pixels.shape, SETTINGS.hires_width))
    assert geom.scaled_shape == tuple(scaled.shape) and geom.hires_shape == tuple(hires.shape)
    x0, y0 = window_offset(tuple(scaled.shape), SETTINGS.input_size)
    window = torch.zeros((SETTINGS.input_size, SETTINGS.input_size))
    rows = scaled[max(0, y0) : y0 + SETTINGS.input_size, max(0, x0) : x0 + SETTINGS.input_size]
    window[max(0, -y0) : max(0, -y0) + rows.shape[0], : rows.shape[1]] = rows
    expected = ((window - SETTINGS.mean) / SETTINGS.std)[None]
    assert torch.allclose(prepared.tensor.cpu(), expected, atol=1e-5)
    # the hires image kept in stored orientation is the mirrored reference, mirrored back
    assert prepared.hires is not None
    stored_hires = prepared.hires.cpu()
    assert torch.allclose(
        torch.flip(stored_hires, dims=(1,)) if flipped else stored_hires, hires, atol=1e-5
    )
    # the ROI for a COA: the same integer window, the same pixels, the same stored box
    for coa in [(10.25, 20.75), (0.5, 0.5), (47.5, 47.5), (30.0, 5.0)]:
        ref = cut_roi(hires.numpy(), geom, coa, roi_size=SETTINGS.roi_size)
        origin = roi_origin_tensor(
            geom, torch.tensor(coa, dtype=torch.float32, device=device), SETTINGS.roi_size
        )
        assert tuple(origin.cpu().tolist()) == ref.hires_origin
        crop = cut_roi_window(prepared.hires, geom, origin, SETTINGS.roi_size).cpu()
        assert torch.allclose(crop, ref.crop, atol=1e-5)
        coa_stored, box = roi_from_origin(geom, coa, ref.hires_origin, SETTINGS.roi_size)
        assert box == ref.stored_box and coa_stored == pytest.approx(ref.coa_stored, abs=1e-9)
    # the saliency upsample, mirrored on the small grid first, equals mirroring after it
    smap = torch.rand(geom.input_shape, generator=torch.Generator().manual_seed(1))
    canvas = torch.zeros(geom.scaled_shape)
    oy = geom.offset[1]
    top, bottom = max(0, oy), min(geom.scaled_shape[0], oy + geom.input_shape[0])
    canvas[top:bottom] = smap[top - oy : bottom - oy]
    up = F.interpolate(canvas[None, None], size=geom.stored_shape, mode="bilinear")[0, 0]
    up = torch.flip(up, dims=(1,)) if flipped else up
    on_device = geom.saliency_on_stored_grid(smap.to(device)).cpu()
    assert on_device.shape == up.shape and torch.allclose(on_device, up, atol=1e-5)
