"""Real PNG/PGM mammograms wrapped into DICOM: tags, exact pixels, lesion coordinates."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.synth import MG_FOR_PRESENTATION
from mammo_node.synth.wrap import (
    MIAS_DIR,
    NYU_DIR,
    SECONDARY_CAPTURE,
    WrapError,
    chest_wall_side,
    mias_to_stored,
    nyu_crop_mapping,
    nyu_lesion_truth,
    read_mias_info,
    wrap_image,
    wrap_mias,
    wrap_nyu_exam,
    write_datasets,
)
from tests.helpers.environment import SHARED
from tests.helpers.tools import dciodvfy_errors


def realdata() -> Path:
    path = Path(os.environ.get("MAMMO_REALDATA") or SHARED / "realdata")
    if not path.is_dir():
        pytest.fail(
            f"real data folder {path} is missing: set MAMMO_REALDATA to the folder "
            f"holding {NYU_DIR} and {MIAS_DIR}"
        )
    return path


@pytest.fixture(scope="module")
def nyu_dir() -> Path:
    return realdata() / NYU_DIR


@pytest.fixture(scope="module")
def mias_dir() -> Path:
    return realdata() / MIAS_DIR


@pytest.fixture(scope="module")
def nyu(nyu_dir: Path) -> list[pydicom.Dataset]:
    return wrap_nyu_exam(nyu_dir)


def test_nyu_exam_becomes_four_mg_views_of_one_study(nyu, nyu_dir: Path) -> None:
    assert [(ds.ImageLaterality, ds.ViewPosition) for ds in nyu] == [
        (s.laterality.value, s.view.value) for s in SLOTS
    ]
    assert len({ds.StudyInstanceUID for ds in nyu}) == 1
    assert len({ds.SeriesInstanceUID for ds in nyu}) == 4
    orientation = {
        "L-CC": ["A", "R"],
        "L-MLO": ["A", "FR"],
        "R-CC": ["P", "L"],
        "R-MLO": ["P", "FL"],
    }
    codes = {"CC": "399162004", "MLO": "399368009"}
    for slot, ds in zip(SLOTS, nyu, strict=True):
        assert ds.SOPClassUID == MG_FOR_PRESENTATION and ds.Modality == "MG"
        assert ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.ViewCodeSequence[0].CodeValue == codes[slot.view.value]
        assert list(ds.PatientOrientation) == orientation[str(slot)]
        assert ds.BitsStored == 12 and ds.PhotometricInterpretation == "MONOCHROME2"
        original = np.array(Image.open(nyu_dir / "sample_data" / "images" / f"0_{slot}.png"))
        assert ds.pixel_array.dtype == np.uint16
        assert np.array_equal(ds.pixel_array, original)  # exactly, not flipped


def test_nyu_files_round_trip_and_pass_dciodvfy(nyu, tmp_path: Path) -> None:
    paths = write_datasets(nyu, tmp_path)
    assert len(paths) == 4
    for ds, path in zip(nyu, paths, strict=True):
        back = pydicom.dcmread(path)
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert np.array_equal(back.pixel_array, ds.pixel_array)
        assert dciodvfy_errors(path) == []


def test_wrapping_twice_gives_the_same_uids(nyu, nyu_dir: Path) -> None:
    again = wrap_nyu_exam(nyu_dir)
    assert [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in nyu]


def test_nyu_benign_lesions_map_back_to_the_stored_grid(nyu, nyu_dir: Path) -> None:
    truth = nyu_lesion_truth(nyu_dir, nyu)
    assert sorted(t.slot for t in truth) == ["R-CC", "R-MLO"]
    by_uid = {ds.SOPInstanceUID: ds for ds in nyu}
    for t in truth:
        ds = by_uid[t.sop_instance_uid]
        slot = Slot.parse(t.slot)
        mapping = nyu_crop_mapping(nyu_dir, slot)
        assert mapping.flipped and mapping.dx == 0
        # the stored pixel at the mapped centre is the cropped pixel at the mask centroid
        mask = (
            np.array(Image.open(nyu_dir / "sample_data" / "segmentation" / f"0_{slot}_benign.png"))
            > 0
        )
        rows, cols = np.nonzero(mask)
        cropped = np.array(
            Image.open(nyu_dir / "sample_data" / "cropped_images" / f"0_{slot}.png")
        ).astype(float)
        for yc, xc in zip(rows[::97], cols[::97], strict=True):
            x, y = mapping.to_stored(float(xc), float(yc))
            stored = float(ds.pixel_array[int(y), int(x)])
            assert cropped[yc, xc] == pytest.approx(stored * mapping.scale, abs=1.0)
        # inside the breast, not in the air
        assert ds.pixel_array[int(t.y), int(t.x)] > 500
        assert 40 < t.radius < 150


def test_chest_wall_side_found_from_the_pixels(nyu) -> None:
    sides = [chest_wall_side(ds.pixel_array) for ds in nyu]
    assert sides == ["left", "left", "right", "right"]
    mirrored = wrap_image(
        nyu[0].pixel_array[:, ::-1],
        laterality="L",
        view="CC",
        patient_id="X",
        bits_stored=12,
        pixel_spacing_mm=0.1,
    )
    assert list(mirrored.PatientOrientation) == ["P", "R"]


def test_mias_lesion_centres_convert_from_a_bottom_left_origin(mias_dir: Path) -> None:
    assert mias_to_stored(538, 681) == (538.0, 342.0)
    info = read_mias_info(mias_dir)
    assert len(info["mdb005"]) == 2 and info["mdb003"][0].x is None
    wrapped = dict(
        zip(
            ["mdb023", "mdb028", "mdb005", "mdb003"],
            wrap_mias(mias_dir, ["mdb023", "mdb028", "mdb005", "mdb003"]),
            strict=True,
        )
    )
    ds, truth = wrapped["mdb023"]
    assert [(t.x, t.y, t.radius, t.kind) for t in truth] == [(538.0, 342.0, 29.0, "circ_malignant")]
    assert truth[0].malignant and truth[0].sop_instance_uid == ds.SOPInstanceUID
    for name in ("mdb023", "mdb028"):
        ds, truth = wrapped[name]
        pixels = ds.pixel_array.astype(float)
        yy, xx = np.mgrid[: ds.Rows, : ds.Columns]
        for t in truth:
            dist = np.hypot(xx - t.x, yy - t.y)
            centre = pixels[dist <= t.radius / 2].mean()
            ring = pixels[(dist > 1.2 * t.radius) & (dist < 2.0 * t.radius)].mean()
            assert centre > ring + 8, (name, centre, ring)  # a bright lesion on tissue
            # the unconverted row (y from Info.txt used as a row) would miss it
            wrong = pixels[np.hypot(xx - t.x, yy - (ds.Rows - 1 - t.y)) <= t.radius / 2].mean()
            assert centre > wrong
    assert len(wrapped["mdb005"][1]) == 2 and wrapped["mdb003"][1] == []


def test_mias_films_become_digitised_film_secondary_captures(
    mias_dir: Path, tmp_path: Path
) -> None:
    (ds, _), (ds_odd, _) = wrap_mias(mias_dir, ["mdb002", "mdb001"])
    assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.ConversionType == "DF"
    assert ds.Modality == "MG" and ds.ViewPosition == "MLO" and ds.BodyPartExamined == "BREAST"
    assert [float(v) for v in ds.PixelSpacing] == [0.2, 0.2]
    assert ds.BitsAllocated == 8 and ds.BitsStored == 8 and (ds.Rows, ds.Columns) == (1024, 1024)
    assert ds.StudyInstanceUID == ds_odd.StudyInstanceUID  # one woman, one study
    assert ds.PatientID == ds_odd.PatientID and ds.SOPInstanceUID != ds_odd.SOPInstanceUID
    original = np.array(Image.open(mias_dir / "mdb002.pgm"))
    assert np.array_equal(ds.pixel_array, original)
    (path,) = write_datasets([ds], tmp_path)
    assert dciodvfy_errors(path) == []


def test_wrap_image_refuses_bad_arguments() -> None:
    yy, xx = np.mgrid[:64, :64]
    pixels = np.where(xx**2 + (yy - 32) ** 2 < 30**2, 1000, 0).astype(np.uint16)  # half disc
    with pytest.raises(WrapError, match='"sop_class"'):
        wrap_image(
            pixels,
            laterality="L",
            view="CC",
            sop_class="ct",
            patient_id="X",
            bits_stored=12,
            pixel_spacing_mm=0.1,
        )
    with pytest.raises(WrapError, match='"laterality"'):
        wrap_image(
            pixels, laterality=None, view="CC", patient_id="X", bits_stored=12, pixel_spacing_mm=0.1
        )
    with pytest.raises(ValueError, match="'X'"):
        wrap_image(
            pixels, laterality="X", view="CC", patient_id="X", bits_stored=12, pixel_spacing_mm=0.1
        )
    ds = wrap_image(
        pixels,
        laterality=Laterality.R,
        view=View.MLO,
        patient_id="X",
        bits_stored=12,
        pixel_spacing_mm=0.1,
    )
    assert list(ds.PatientOrientation) == ["A", "FL"]  # chest wall found on the left
