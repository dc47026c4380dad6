"""The display image of the writers: one table lookup per pixel gives exactly the values of
the display pipeline run over the full-size image, and each view is rendered once."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import Dataset

from mammo_node import lut
from mammo_node.writers.display import _grey, block_mean, display_grey
from tests.helpers.mg import breast_phantom, mg_dataset


def voi_lut_sequence(ds: Dataset) -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = [int(v) for v in (np.arange(4096) ** 0.5 * 64).clip(0, 4095)]
    ds.VOILUTSequence = [item]


def signed(ds: Dataset) -> None:
    ds.PixelRepresentation = 1
    ds.PixelData = (ds.pixel_array.astype(np.int32) - 2048).astype(np.int16).tobytes()


CASES = {
    "no VOI: percentile window": ({}, None),
    "window": ({"WindowCenter": 1500.0, "WindowWidth": 1000.0}, None),
    "linear exact": (
        {"WindowCenter": 1500.0, "WindowWidth": 1000.0, "VOILUTFunction": "LINEAR_EXACT"},
        None,
    ),
    "sigmoid": ({"WindowCenter": 1500.0, "WindowWidth": 800.0, "VOILUTFunction": "SIGMOID"}, None),
    "rescale + window": (
        {
            "RescaleSlope": 2.0,
            "RescaleIntercept": -50.0,
            "WindowCenter": 3000.0,
            "WindowWidth": 2e3,
        },
        None,
    ),
    "MONOCHROME1": (
        {"photometric": "MONOCHROME1", "WindowCenter": 2000.0, "WindowWidth": 3e3},
        None,
    ),
    "VOI LUT sequence": ({}, voi_lut_sequence),
    "signed, no VOI": ({}, signed),
}


@pytest.mark.parametrize("case", CASES)
def test_table_lookup_equals_the_full_size_pipeline(case: str) -> None:
    tags, change = CASES[case]
    ds = mg_dataset(display=breast_phantom(80, 60), **tags)
    if change is not None:
        change(ds)
    full_size = _grey(ds.pixel_array, ds, ds.pixel_array)  # the pipeline over every pixel
    grey = display_grey(ds)
    assert grey.dtype == np.float32 and grey.shape == (80, 60)
    assert np.array_equal(grey, full_size)
    assert grey.max() > grey.min()  # a real image, not a constant


@pytest.mark.parametrize("case", ["window", "signed, no VOI", "MONOCHROME1"])
@pytest.mark.parametrize("factor", [2, 3])
def test_reduced_display_equals_the_block_mean_of_the_full_size_one(
    case: str, factor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SC's reduced image comes from a lookup over bands of rows, never a full-size
    float array; its values are exactly the block means of the full-size display (ragged
    edges replicated), for even and odd image sizes, in one band or many (a last band
    shorter than the others)."""
    tags, change = CASES[case]
    for band_bytes in (lut._BAND_BYTES, 61 * 4 * factor * 5):  # whole image; 4-5 block rows
        monkeypatch.setattr(lut, "_BAND_BYTES", band_bytes)
        for rows, columns in ((84, 60), (83, 61)):
            ds = mg_dataset(display=breast_phantom(rows, columns), **tags)
            if change is not None:
                change(ds)
            reduced = display_grey(ds, factor)
            assert reduced.shape == (-(-rows // factor), -(-columns // factor))
            assert np.array_equal(reduced, block_mean(display_grey(ds), factor))
            assert reduced.max() > reduced.min()
    # block_mean itself: a ragged edge is the mean of the edge pixel repeated
    image = np.arange(15, dtype=np.float32).reshape(3, 5)
    assert np.array_equal(
        block_mean(image, 2), np.array([[3, 5, 6.5], [10.5, 12.5, 14]], np.float32)
    )


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.int8])
def test_banded_lookup_gives_the_values_of_one_take(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lut.lookup`` writes bands of rows straight into its result: the values of one
    ``np.take`` over the whole image, for one band or many (a last band shorter), a mirrored
    (negative-stride) view, a row and an empty image; a table too short for the pixel type
    is refused before any lookup."""
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    raw = rng.integers(info.min, info.max, (37, 23), endpoint=True).astype(dtype)
    table = rng.random(1 << (8 * raw.itemsize), dtype=np.float32)
    for band_bytes in (lut._BAND_BYTES, 23 * 4 * 5):  # whole image; 5 rows a band
        monkeypatch.setattr(lut, "_BAND_BYTES", band_bytes)
        for image in (raw, raw[:, ::-1], raw[3], raw[:0]):
            looked_up = lut.lookup(table, image)
            assert looked_up.dtype == np.float32 and looked_up.shape == image.shape
            assert np.array_equal(looked_up, np.take(table, lut.patterns(image)))
    with pytest.raises(ValueError, match="cannot cover"):
        lut.lookup(table[:-1], raw)
