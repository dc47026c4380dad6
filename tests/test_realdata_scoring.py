"""The real NYU 4-view exam, wrapped as DICOM, through the demo model and the writers:
scored, the heat map on the breast in the right orientation, ROI boxes inside the images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mammo_node.config import Settings
from mammo_node.domain import Laterality, Slot
from mammo_node.ml.loading import load_scorer
from mammo_node.synth import wrap
from mammo_node.writers import build_outputs
from mammo_node.writers.identity import OutputKind
from mammo_node.writers.saliency_grid import on_blocks


def breast_mask(pixels: np.ndarray) -> np.ndarray:
    """Tissue vs air: NYU originals are MONOCHROME2 with air near zero."""
    return pixels > max(50, 0.05 * float(pixels.max()))


@pytest.fixture(scope="module")
def scored_nyu(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    datasets = wrap.wrap_nyu_exam(realdata / "nyu-gmic-exam0__nyukat-GMIC")
    sources = {Slot.parse(f"{d.ImageLaterality}-{d.ViewPosition}"): d for d in datasets}
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu")
    scorer = load_scorer(settings)  # the packaged demo bundle
    inference = scorer.score_exam(sources, str(datasets[0].StudyInstanceUID))
    outputs = build_outputs(sources, inference, revision=0)
    return {"sources": sources, "inference": inference, "outputs": outputs}


def test_real_exam_is_scored_with_boxes_inside_the_images(scored_nyu: dict[str, Any]) -> None:
    inference = scored_nyu["inference"]
    assert set(inference.views) == set(scored_nyu["sources"])
    assert np.isfinite(inference.scores.exam_score)
    for slot, view in inference.views.items():
        source = scored_nyu["sources"][slot]
        x0, y0, x1, y1 = view.roi
        assert 0 <= x0 < x1 <= source.Columns and 0 <= y0 < y1 <= source.Rows, (slot, view.roi)
        assert x0 <= view.coa[0] <= x1 and y0 <= view.coa[1] <= y1
        assert view.saliency.stored_shape == (source.Rows, source.Columns)


def test_saliency_lies_on_the_breast_in_each_stored_orientation(
    scored_nyu: dict[str, Any],
) -> None:
    """The stored images keep their orientation (right breasts have the chest wall on the
    other side); the SEG of the most salient pixels must sit on tissue, not on air."""
    segs = {o.slot: o.dataset for o in scored_nyu["outputs"] if o.kind is OutputKind.SEG}
    assert set(segs) == set(scored_nyu["sources"])
    for slot, seg in segs.items():
        pixels = scored_nyu["sources"][slot].pixel_array
        tissue = breast_mask(pixels)
        mask = seg.pixel_array.astype(bool)
        assert mask.shape == pixels.shape and mask.any(), slot
        on_tissue = (mask & tissue).sum() / mask.sum()
        assert on_tissue > 0.9, f"{slot}: only {on_tissue:.0%} of the salient pixels on tissue"
        # the whole map: its mass lies on tissue, more than its mirror image would
        saliency = on_blocks(scored_nyu["inference"].views[slot].saliency)
        mass = (saliency * tissue).sum() / saliency.sum()
        mirrored = (saliency[:, ::-1] * tissue).sum() / saliency.sum()
        assert mass > 0.9 and mass > mirrored, f"{slot}: {mass:.3f} vs mirrored {mirrored:.3f}"
        chest_wall_left = (
            tissue[:, : tissue.shape[1] // 2].sum() > tissue[:, tissue.shape[1] // 2 :].sum()
        )
        assert chest_wall_left == (slot.laterality is Laterality.L)


def test_secondary_capture_shows_the_image_the_right_way_round(
    scored_nyu: dict[str, Any],
) -> None:
    """The SC's grey picture matches the stored image, not its mirror image."""
    scs = {o.slot: o.dataset for o in scored_nyu["outputs"] if o.kind is OutputKind.SC}
    for slot, sc in scs.items():
        rgb = sc.pixel_array.astype(float)
        grey = rgb.min(axis=2)  # the heat map adds colour; the minimum channel keeps anatomy
        source = scored_nyu["sources"][slot].pixel_array.astype(float)
        factor_r = source.shape[0] / grey.shape[0]
        factor_c = source.shape[1] / grey.shape[1]
        rows = (np.arange(grey.shape[0]) * factor_r).astype(int)
        cols = (np.arange(grey.shape[1]) * factor_c).astype(int)
        small = source[np.ix_(rows, cols)]
        same = np.corrcoef(grey.ravel(), small.ravel())[0, 1]
        mirror = np.corrcoef(grey.ravel(), small[:, ::-1].ravel())[0, 1]
        assert same > 0.8 and same > mirror + 0.3, f"{slot}: r={same:.2f}, mirrored {mirror:.2f}"
