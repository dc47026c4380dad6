"""Preprocessing: decoding, orientation rules and the exact geometry round trip."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch

from mammo_node.domain import SaliencyMap
from mammo_node.errors import PixelDataError
from mammo_node.ml.preprocess import (
    Augmentation,
    Geometry,
    OrientationRule,
    PreprocessSettings,
    load_pixels,
    preprocess,
    train_tensor,
)
from mammo_node.writers.saliency_grid import on_blocks
from tests.helpers.environment import SHARED
from tests.helpers.mg import breast_phantom, mg_dataset, plant_spot

NEMA = SHARED / "realdata" / "nema-wg04-MG1__robyoung-dicom-test-files"
SETTINGS = PreprocessSettings(input_size=64, roi_size=32, roi_scale=2.0)

# (laterality, view, PatientOrientation as a real modality writes it, chest wall in storage)
CASES = [
    ("L", "CC", ["A", "R"], "left"),
    ("L", "MLO", ["A", "FR"], "left"),
    ("R", "CC", ["P", "L"], "right"),
    ("R", "MLO", ["P", "FL"], "right"),
]


def stored_display(chest_wall: str, rows: int = 150, cols: int = 110) -> np.ndarray:
    image = breast_phantom(rows, cols)
    return image if chest_wall == "left" else image[:, ::-1].copy()


def model_peak(tensor: torch.Tensor) -> tuple[float, float]:
    t = tensor[0]
    idx = int(torch.argmax(t))
    return idx % t.shape[1] + 0.5, idx // t.shape[1] + 0.5


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize(("laterality", "view", "orientation", "chest_wall"), CASES)
def test_point_maps_back_to_the_same_stored_pixel(
    laterality: str, view: str, orientation: list[str], chest_wall: str, photometric: str
) -> None:
    display = stored_display(chest_wall)
    col, row = (70, 80) if chest_wall == "left" else (39, 80)
    plant_spot(display, col + 0.5, row + 0.5, radius=2.5)
    ds = mg_dataset(
        laterality,
        view,
        display=display,
        PatientOrientation=None if orientation is None else list(orientation),
        photometric=photometric,
    )
    prepared = preprocess(ds, laterality=laterality, settings=SETTINGS)
    geom = prepared.geometry

    assert geom.flipped is (chest_wall == "right")
    assert geom.orientation_rule is OrientationRule.PATIENT_ORIENTATION
    # Chest wall on the left of the model input whatever the storage.
    third = SETTINGS.input_size // 3
    assert prepared.tensor[0, :, :third].mean() > prepared.tensor[0, :, -third:].mean()
    # The planted spot (bright in display, whatever MONOCHROME) is where the geometry says.
    mx, my = geom.to_model(col + 0.5, row + 0.5)
    px, py = model_peak(prepared.tensor)
    assert abs(px - mx) <= 1.0 and abs(py - my) <= 1.0
    # Exact inverse, both ways, for every stored pixel centre and a model point.
    ys, xs = np.mgrid[0 : ds.Rows, 0 : ds.Columns] + 0.5
    bx, by = geom.to_stored(*geom.to_model(xs, ys))
    assert np.allclose(bx, xs, atol=1e-9) and np.allclose(by, ys, atol=1e-9)
    sx, sy = geom.to_stored(px, py)
    assert (int(np.floor(sx)), int(np.floor(sy))) in {
        (col + dx, row + dy) for dx in (-2, -1, 0, 1, 2) for dy in (-2, -1, 0, 1, 2)
    }
    # A saliency map peaking at the spot comes back peaking at the stored spot.
    smap = torch.zeros(geom.input_shape)
    smap[int(my), int(mx)] = 1.0
    stored = geom.saliency_to_stored(smap)
    assert stored.shape == (ds.Rows, ds.Columns)
    sr, sc = np.unravel_index(int(np.argmax(stored)), stored.shape)
    assert abs(sc - col) <= 2 and abs(sr - row) <= 2
    # Geometry survives a JSON round trip.
    assert Geometry.from_dict(geom.to_dict()) == geom


@pytest.mark.parametrize("shape", [(300, 100), (50, 100), (150, 110)])  # crop, pad, fit
@pytest.mark.parametrize("chest_wall", ["left", "right"])
def test_the_writers_resampling_of_the_rescaled_map_is_torchs_stored_grid_map(
    shape: tuple[int, int], chest_wall: str
) -> None:
    """The scorer hands the writers the map on the rescaled grid; sampled at every stored pixel
    it must be the map torch upsamples to the stored grid (crop/pad and flip undone)."""
    rows, cols = shape
    image = breast_phantom(rows, cols)
    image = image if chest_wall == "left" else image[:, ::-1].copy()
    geom = preprocess(image, laterality="L" if chest_wall == "left" else "R", settings=SETTINGS)
    geom = geom.geometry
    smap = torch.rand(geom.input_shape, generator=torch.Generator().manual_seed(rows))
    grid = geom.saliency_on_scaled_grid(smap)
    assert tuple(grid.shape) == geom.scaled_shape
    resampled = on_blocks(SaliencyMap(grid.numpy(), stored_shape=geom.stored_shape))
    expected = geom.saliency_on_stored_grid(smap).numpy()
    assert resampled.shape == expected.shape == (rows, cols)
    assert np.abs(resampled - expected).max() < 1e-5


def test_orientation_falls_back_to_laterality_then_intensity() -> None:
    right_stored = stored_display("right")
    p = preprocess(mg_dataset("R", display=right_stored), laterality="R", settings=SETTINGS)
    assert (p.geometry.flipped, p.geometry.orientation_rule) == (True, OrientationRule.LATERALITY)
    p = preprocess(right_stored, laterality=None, settings=SETTINGS)
    assert (p.geometry.flipped, p.geometry.orientation_rule) == (True, OrientationRule.INTENSITY)
    p = preprocess(stored_display("left"), laterality=None, settings=SETTINGS)
    assert (p.geometry.flipped, p.geometry.orientation_rule) == (False, OrientationRule.INTENSITY)


def test_crop_and_pad_geometry() -> None:
    tall = preprocess(
        np.random.default_rng(0).random((300, 100)), laterality="L", settings=SETTINGS
    )
    assert tall.geometry.scaled_shape == (192, 64) and tall.geometry.offset == (0, 64)
    wide = preprocess(np.random.default_rng(0).random((50, 100)), laterality="L", settings=SETTINGS)
    assert wide.geometry.scaled_shape == (32, 64) and wide.geometry.offset == (0, -16)
    # Padding rows are black (0 before normalisation).
    black = (0.0 - SETTINGS.mean) / SETTINGS.std
    assert torch.allclose(wide.tensor[0, :16], torch.full((16, 64), black))
    assert wide.hires is not None and wide.hires.shape == (64, 128)


def test_modality_and_voi_lut_are_applied() -> None:
    display = breast_phantom(60, 40)
    ds = mg_dataset(display=display, RescaleSlope=2.0, RescaleIntercept=-100.0, RescaleType="US")
    expected = (display - display.min()) / (display.max() - display.min())  # min-max to 0..1
    assert np.allclose(load_pixels(ds), expected, atol=1e-3)
    # A narrow window saturates: everything above centre + width/2 becomes 1.
    ds = mg_dataset(display=display, WindowCenter=1000.0, WindowWidth=200.0)
    pixels = load_pixels(ds)
    assert pixels.max() == pytest.approx(1.0)
    assert np.mean(pixels > 0.99) == pytest.approx(np.mean(display * 4095 > 1100), abs=0.02)


def test_undecodable_pixels_raise_pixel_data_error() -> None:
    ds = pydicom.dcmread(NEMA / "MG1_JPLY")
    with pytest.raises(PixelDataError, match="cannot be decoded"):
        load_pixels(ds)


def test_colour_and_multiframe_are_refused() -> None:
    ds = mg_dataset(display=breast_phantom(20, 20))
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(PixelDataError, match="not greyscale"):
        load_pixels(ds)
    ds = mg_dataset(display=breast_phantom(20, 20))
    ds.NumberOfFrames = 3
    with pytest.raises(PixelDataError, match="3 frames"):
        load_pixels(ds)


def test_real_jpeg2000_mammogram_decodes_and_orients_from_patient_orientation() -> None:
    ds = pydicom.dcmread(NEMA / "MG1_J2KI")
    prepared = preprocess(ds, laterality=ds.Laterality, settings=SETTINGS)
    assert prepared.geometry.stored_shape == (4664, 3064)
    assert prepared.geometry.orientation_rule is OrientationRule.PATIENT_ORIENTATION
    assert prepared.geometry.flipped is False  # PatientOrientation A\F: chest wall already left
    assert torch.isfinite(prepared.tensor).all()


def test_training_transform_is_random_but_reproducible() -> None:
    image = breast_phantom(100, 64)
    aug = Augmentation()

    def draw(seed: int) -> torch.Tensor:
        return train_tensor(
            image,
            size=64,
            settings=SETTINGS,
            augmentation=aug,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = draw(1), draw(1), draw(2)
    assert a.shape == (1, 64, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_settings_validate_with_clear_messages() -> None:
    with pytest.raises(ValueError, match='"input_size" should be at least 16, got 8'):
        PreprocessSettings(input_size=8)
    with pytest.raises(ValueError, match='"roi_scale" should be > 0'):
        PreprocessSettings(roi_scale=0)
    with pytest.raises(ValueError, match="Unknown preprocessing setting"):
        PreprocessSettings.from_dict({"size": 3})
