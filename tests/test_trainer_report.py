"""Report and export arithmetic: exam AUCs with bootstrap CIs, operating points."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trainer.errors import RunError
from trainer.export import operating_points
from trainer.report import Evaluation


def cohort(seed: int = 0) -> tuple[dict[str, str], dict[str, float]]:
    rng = np.random.default_rng(seed)
    outcomes, scores = {}, {}
    for i in range(200):
        outcome = "screening" if i < 30 else "interval" if i < 45 else "normal"
        outcomes[f"s{i}"] = outcome
        scores[f"s{i}"] = float(rng.normal({"screening": 2.0, "interval": 0.7}.get(outcome, 0)))
    return outcomes, scores


def test_auc_tasks_and_bootstrap_interval() -> None:
    outcomes, scores = cohort()
    ev = Evaluation(sorted(outcomes), outcomes, {"m": scores}, bootstrap=300, seed=0)
    screening = ev.auc("m", "screening")
    both = ev.auc("m", "screening_interval")
    y1 = [outcomes[s] == "screening" for s in ev.studies]
    y2 = [outcomes[s] != "normal" for s in ev.studies]
    assert screening["auc"] == pytest.approx(roc_auc_score(y1, [scores[s] for s in ev.studies]))
    assert both["auc"] == pytest.approx(roc_auc_score(y2, [scores[s] for s in ev.studies]))
    assert (screening["positives"], both["positives"]) == (30, 45)
    lo, hi = screening["ci"]
    assert lo < screening["auc"] < hi and hi - lo < 0.2
    # Interval cancers look less suspicious here, so adding them as positives lowers the AUC.
    assert both["auc"] < screening["auc"]


def test_operating_points_reach_their_sensitivity_with_the_highest_threshold() -> None:
    outcomes, scores = cohort(1)
    points = operating_points(scores, outcomes, (0.85, 0.9))
    assert [p.name for p in points] == ["sensitivity_90", "sensitivity_85"]
    positives = np.array([scores[s] for s in scores if outcomes[s] == "screening"])
    negatives = np.array([scores[s] for s in scores if outcomes[s] != "screening"])
    for p, target in zip(points, (0.9, 0.85), strict=True):
        assert np.mean(positives >= p.threshold) >= target
        # one step higher would miss the target: the threshold is a positive's score
        above = positives[positives > p.threshold]
        assert len(above) / len(positives) < target
        assert p.specificity == pytest.approx(np.mean(negatives < p.threshold))
    assert points[0].threshold <= points[1].threshold
    with pytest.raises(RunError, match="screening cancers and other exams"):
        operating_points({"a": 1.0}, {"a": "normal"}, (0.9,))
