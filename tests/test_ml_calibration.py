"""A bundle's calibration: probability at a stated prevalence, 1-10 deciles, old bundles load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mammo_node.errors import ModelError
from mammo_node.ml.bundle import (
    BundleManifest,
    load_bundle,
    read_manifest,
    rewrite_manifest,
    save_bundle,
)
from mammo_node.ml.calibration import Calibration
from mammo_node.ml.models import build_model
from mammo_node.ml.preprocess import PreprocessSettings
from trainer.calibrate import fit_calibration
from trainer.stats import expected_range


def population(n: int = 2000, prevalence: float = 0.1, seed: int = 0) -> tuple[dict, dict]:
    """Exam scores where cancers score higher: N(2, 1) vs N(0, 1)."""
    rng = np.random.default_rng(seed)
    outcomes, scores = {}, {}
    for i in range(n):
        cancer = rng.random() < prevalence
        outcomes[f"s{i}"] = "screening" if cancer else "normal"
        scores[f"s{i}"] = float(rng.normal(2.0 if cancer else 0.0))
    return outcomes, scores


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_probability_is_calibrated_and_restated_at_another_prevalence(method: str) -> None:
    outcomes, scores = population(seed=1)
    calibration, points = fit_calibration(scores, outcomes, {}, method=method)
    assert calibration.fitted_prevalence == pytest.approx(calibration.cancers / 2000)
    # on new exams of the same population the mean probability matches the cancer rate per bin
    test_outcomes, test_scores = population(seed=2)
    ordered = sorted(test_scores, key=test_scores.get)
    for part in np.array_split(np.array(ordered), 4):
        predicted = np.mean([calibration.probability(test_scores[s]) for s in part])
        observed = np.mean([test_outcomes[s] == "screening" for s in part])
        assert predicted == pytest.approx(observed, abs=0.05)
    # Bayes: the odds scale with the prevalence's odds
    low = dataclasses.replace(calibration, prevalence=0.01)
    p, q = calibration.probability(1.5), low.probability(1.5)
    ratio = (q / (1 - q)) / (p / (1 - p))
    fitted = calibration.fitted_prevalence
    assert ratio == pytest.approx((0.01 / 0.99) / (fitted / (1 - fitted)), rel=1e-6)
    assert [calibration.probability(x) for x in (-1, 0, 1, 2, 3)] == sorted(
        calibration.probability(x) for x in (-1, 0, 1, 2, 3)
    )
    names = [p.name for p in points]
    assert names == ["sensitivity_95", "sensitivity_90", "sensitivity_85", "recall_rate_5"]


def test_categories_are_deciles_of_the_population() -> None:
    outcomes, scores = population(seed=3)
    calibration, _ = fit_calibration(scores, outcomes, {})
    counts = np.bincount([calibration.category(s) for s in scores.values()], minlength=11)[1:]
    assert counts.sum() == 2000 and all(190 <= c <= 210 for c in counts)
    assert calibration.category(-100) == 1 and calibration.category(100) == 10


def test_operating_points_hold_on_new_exams_within_their_intervals() -> None:
    outcomes, scores = population(n=3000, seed=4)
    calibration, points = fit_calibration(scores, outcomes, {}, recall_rate=0.1)
    test_outcomes, test_scores = population(n=3000, seed=5)
    pos = [v for k, v in test_scores.items() if test_outcomes[k] == "screening"]
    neg = [v for k, v in test_scores.items() if test_outcomes[k] != "screening"]
    for detail in calibration.points:
        assert (
            detail.positives == calibration.cancers and detail.negatives == 3000 - detail.positives
        )
        assert detail.sensitivity == detail.true_positives / detail.positives
        assert detail.chosen_on_cancers == detail.name.startswith("sensitivity")
        sens = np.mean([v >= detail.threshold for v in pos])
        spec = np.mean([v < detail.threshold for v in neg])
        lo, hi = expected_range(
            detail.true_positives,
            detail.positives,
            len(pos),
            order_statistic=detail.chosen_on_cancers,
        )
        assert lo <= sens <= hi, detail.name
        lo, hi = expected_range(
            detail.true_negatives, detail.negatives, len(neg), order_statistic=False
        )
        assert lo <= spec <= hi, detail.name
    recall = calibration.points[-1]
    assert recall.name == "recall_rate_10" and recall.recall_rate <= 0.1
    assert recall.recall_rate == pytest.approx(0.1, abs=0.005)
    assert points[-1].threshold == recall.threshold


def test_sensitivity_intervals_cover_the_population_value_on_small_calibration_sets() -> None:
    """A 90 % point fitted on 15 cancers: over 400 calibration sets the exact interval holds
    the threshold's population sensitivity (cancers ~ N(2, 1): 1 - Phi(t - 2)) at least 95 %
    of the time, and the range for 15 new cancers holds their measurement as often; the
    point's mean population sensitivity is k / (n + 1), below the k / n measured."""
    from scipy.stats import norm

    rng = np.random.default_rng(7)
    covered = predicted = 0
    truths = []
    for trial in range(400):
        n = 40
        cancers = rng.normal(2.0, 1.0, 15)
        normals = rng.normal(0.0, 1.0, n - 15)
        scores = {f"p{i}": float(v) for i, v in enumerate(cancers)}
        scores |= {f"n{i}": float(v) for i, v in enumerate(normals)}
        outcomes = {k: "screening" if k[0] == "p" else "normal" for k in scores}
        calibration, _ = fit_calibration(scores, outcomes, {}, sensitivities=(0.9,), recall_rate=0)
        point = calibration.points[0]
        truth = float(norm.sf(point.threshold - 2.0))
        truths.append(truth)
        lo, hi = point.sensitivity_ci
        covered += lo <= truth <= hi
        new = rng.normal(2.0, 1.0, 15)
        measured = float(np.mean(new >= point.threshold))
        lo, hi = expected_range(point.true_positives, point.positives, 15, order_statistic=True)
        predicted += lo <= measured <= hi
        assert (point.true_positives, point.positives) == (14, 15), trial
    assert covered / 400 >= 0.95 and predicted / 400 >= 0.95
    assert np.mean(truths) == pytest.approx(14 / 16, abs=0.02)


def _manifest(**extra: object) -> BundleManifest:
    return BundleManifest(
        name="cal-test",
        version="1",
        architecture="resnet18",
        preprocess=PreprocessSettings(input_size=32, roi_size=16),
        is_demo=True,
        **extra,  # type: ignore[arg-type]
    )


def test_bundle_carries_calibration_and_old_bundles_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(arch="resnet18")
    outcomes, scores = population(n=400, seed=6)
    calibration, points = fit_calibration(scores, outcomes, {}, prevalence=0.006)
    written = save_bundle(tmp_path / "old", holistic=model, attention=model, manifest=_manifest())
    raw = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert "calibration" not in raw  # an old bundle's manifest
    raw["preprocess"].pop("coa_rule")  # ... made before the COA rule was a setting
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(raw))
    old = load_bundle(tmp_path / "old")
    assert old.calibration is None and old.manifest.preprocess.coa_rule == "paper"

    rewrite_manifest(
        tmp_path / "old",
        dataclasses.replace(old.manifest, calibration=calibration, operating_points=points),
    )
    loaded = load_bundle(tmp_path / "old")
    assert loaded.calibration == calibration and loaded.info.operating_points == points
    assert loaded.calibration.probability(2.0) == calibration.probability(2.0)
    assert read_manifest(tmp_path / "old")[0].weights == written.weights
    with pytest.raises(ModelError, match="other weights"):
        rewrite_manifest(tmp_path / "old", dataclasses.replace(loaded.manifest, weights={}))
    with pytest.raises(ValueError, match="knots"):
        Calibration(method="isotonic", prevalence=0.1, fitted_prevalence=0.1)
