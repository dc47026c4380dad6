"""EnsembleScorer: DICOM views and exams in, stored-grid results and timings out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mammo_node.domain import SLOTS, OperatingPoint, Slot
from mammo_node.errors import ModelError, PixelDataError
from mammo_node.ml.bundle import BundleManifest, load_bundle, save_bundle
from mammo_node.ml.inference import EnsembleScorer, resolve_device, resolve_precision
from mammo_node.ml.models import build_model
from mammo_node.ml.preprocess import PreprocessSettings
from mammo_node.responses import ScoredExam
from mammo_node.writers.saliency_grid import on_blocks
from tests.helpers.mg import breast_phantom, mg_dataset, plant_spot

SETTINGS = PreprocessSettings(input_size=64, roi_size=32, roi_scale=2.0)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundle")
    manifest = BundleManifest(
        name="t",
        version="1",
        architecture="resnet18",
        preprocess=SETTINGS,
        is_demo=True,
        operating_points=(OperatingPoint("low", -1e9), OperatingPoint("high", 1e9)),
    )
    save_bundle(
        out,
        holistic=build_model(arch="resnet18"),
        attention=build_model(arch="resnet18"),
        manifest=manifest,
    )
    return out


@pytest.fixture(scope="module")
def scorer(bundle_dir: Path) -> EnsembleScorer:
    return EnsembleScorer(load_bundle(bundle_dir), device="cpu", precision="fp32")


def exam_datasets() -> dict[Slot, object]:
    out = {}
    for i, slot in enumerate(SLOTS):
        image = breast_phantom(120, 90, seed=i)
        plant_spot(image, 40.5, 60.5, radius=3.0)
        if slot.laterality.value == "R":
            image = image[:, ::-1].copy()
        out[slot] = mg_dataset(
            display=image, laterality=slot.laterality.value, view=slot.view.value, study_uid="1.2.3"
        )
    return out


def test_exam_results_follow_the_rules_and_live_on_the_stored_grid(scorer: EnsembleScorer) -> None:
    datasets = exam_datasets()
    result = scorer.score_exam(datasets, "1.2.3")
    assert set(result.views) == set(SLOTS)
    for slot, view in result.views.items():
        ds = datasets[slot]
        assert view.sop_instance_uid == ds.SOPInstanceUID
        assert view.ensemble == pytest.approx((view.holistic + view.attention) / 2)
        smap = view.saliency
        assert smap.stored_shape == (ds.Rows, ds.Columns) and smap.values.dtype == np.float32
        assert smap.values.min() >= 0.0 and smap.values.max() == pytest.approx(1.0, abs=1e-6)
        # the scorer's map: the model's rescaled grid (the geometry's), not the stored grid
        assert smap.shape == scorer.prepare(ds, slot).geometry.scaled_shape
        stored = on_blocks(smap)
        assert stored.shape == (ds.Rows, ds.Columns) and 0.5 < stored.max() <= 1.0
        x0, y0, x1, y1 = view.roi
        assert 0 <= x0 < x1 <= ds.Columns and 0 <= y0 < y1 <= ds.Rows
        assert x0 <= view.coa[0] <= x1 and y0 <= view.coa[1] <= y1
        assert {"load", "preprocess", "holistic_saliency", "attention"} <= set(view.timings)
    breasts = {
        lat: sum(v.ensemble for s, v in result.views.items() if s.laterality is lat)
        for lat in result.scores.breast_scores
    }
    assert result.scores.breast_scores == pytest.approx(breasts)
    assert result.scores.exam_score == pytest.approx(max(breasts.values()))
    assert result.verdicts == {"low": True, "high": False}
    assert result.timings["total"] > 0
    assert ScoredExam.of(result).to_json()["model"] == {"name": "t", "version": "1"}


def test_a_mirrored_right_breast_gives_the_mirrored_coa(scorer: EnsembleScorer) -> None:
    image = breast_phantom(120, 90, seed=5)
    plant_spot(image, 30.5, 50.5, radius=3.0)
    left = scorer.score_view(
        mg_dataset(display=image, laterality="L", view="CC"), Slot.parse("L-CC")
    )
    right = scorer.score_view(
        mg_dataset(display=image[:, ::-1].copy(), laterality="R", view="CC"), Slot.parse("R-CC")
    )
    # The same pixels reach the model, so the scores agree ...
    assert right.holistic == pytest.approx(left.holistic, abs=1e-5)
    assert right.attention == pytest.approx(left.attention, abs=1e-5)
    # ... and every coordinate comes back mirrored in the right breast's own stored grid.
    assert right.coa[0] == pytest.approx(90 - left.coa[0], abs=1e-4)
    assert right.coa[1] == pytest.approx(left.coa[1], abs=1e-4)
    assert right.roi == (90 - left.roi[2], left.roi[1], 90 - left.roi[0], left.roi[3])
    assert np.allclose(right.saliency.values, left.saliency.values[:, ::-1], atol=1e-5)
    assert np.allclose(on_blocks(right.saliency), on_blocks(left.saliency)[:, ::-1], atol=1e-5)


@pytest.mark.parametrize("views_per_pass", [1, 0])  # 0: every view of the call in one pass
def test_score_exams_gives_each_exam_its_own_outcome(
    scorer: EnsembleScorer, views_per_pass: int
) -> None:
    good = exam_datasets()
    colour = exam_datasets()
    colour[Slot.parse("R-CC")].PhotometricInterpretation = "RGB"  # cannot be scored
    one_view = {Slot.parse("L-CC"): exam_datasets()[Slot.parse("L-CC")]}  # no whole breast
    alone = scorer.score_exam(good, "1.2.3")
    saved = scorer.batch_size
    scorer.batch_size = views_per_pass
    try:
        outcomes = scorer.score_exams([(colour, "1.2.3"), (good, "1.2.3"), (one_view, "1.2.3")])
    finally:
        scorer.batch_size = saved
    assert len(outcomes) == 3
    assert isinstance(outcomes[0], PixelDataError) and "not greyscale" in str(outcomes[0])
    assert isinstance(outcomes[2], ValueError) and "needs both CC and MLO" in str(outcomes[2])
    scored = outcomes[1]
    assert not isinstance(scored, Exception)
    # the same exam scored in a batch as alone
    assert scored.scores.exam_score == pytest.approx(alone.scores.exam_score, abs=1e-4)
    for slot, view in scored.views.items():
        assert view.coa == pytest.approx(alone.views[slot].coa, abs=1e-3)
        assert view.roi == alone.views[slot].roi
        assert np.allclose(view.saliency.values, alone.views[slot].saliency.values, atol=1e-4)


def test_bf16_stays_close_to_fp32_on_cpu(scorer: EnsembleScorer, bundle_dir: Path) -> None:
    ds = exam_datasets()[Slot.parse("L-MLO")]
    bf16 = EnsembleScorer(load_bundle(bundle_dir), device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and scorer.precision == "fp32"
    a = scorer.score_view(ds, Slot.parse("L-MLO"))
    b = bf16.score_view(ds, Slot.parse("L-MLO"))
    assert b.holistic != a.holistic  # really computed in another precision
    assert abs(a.holistic - b.holistic) < 0.1 * max(1.0, abs(a.holistic))
    assert abs(a.attention - b.attention) < 0.1 * max(1.0, abs(a.attention))


def test_precision_and_device_are_validated() -> None:
    with pytest.raises(ModelError, match='"precision" should be one of'):
        resolve_precision("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda")
