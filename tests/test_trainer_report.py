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


def test_paired_delong_matches_a_bootstrap_of_the_difference() -> None:
    from trainer.stats import delong_paired

    rng = np.random.default_rng(7)
    y = np.array([1] * 60 + [0] * 140)
    a = y * 1.5 + rng.normal(size=200)
    b = y * 1.0 + rng.normal(size=200) + 0.3 * a
    test = delong_paired(y.tolist(), a.tolist(), b.tolist())
    assert test["difference"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    diffs = []
    for _ in range(400):
        i = rng.integers(0, 200, 200)
        if 0 < y[i].sum() < 200:
            diffs.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert test["se"] == pytest.approx(np.std(diffs), rel=0.25)
    assert 0 <= test["p"] <= 1
    same = delong_paired(y.tolist(), a.tolist(), a.tolist())
    assert same["difference"] == 0 and same["p"] == 1.0


def test_bootstrap_resamples_patients_not_exams() -> None:
    from trainer.stats import patient_bootstrap_auc

    # every patient has 5 identical exams: resampling exams would treat them as 5 independent
    # observations and give a far narrower interval than resampling the 40 women
    rng = np.random.default_rng(8)
    y_p = np.array([1] * 12 + [0] * 28)
    s_p = y_p * 1.0 + rng.normal(size=40)
    y, s = np.repeat(y_p, 5), np.repeat(s_p, 5)
    patients = [f"p{i // 5}" for i in range(200)]
    lo, hi = patient_bootstrap_auc(y, s, patients, resamples=300, seed=0)
    lo_e, hi_e = patient_bootstrap_auc(y, s, [str(i) for i in range(200)], resamples=300, seed=0)
    assert (hi - lo) > 1.7 * (hi_e - lo_e)


def test_localisation_gives_small_lesion_image_aucs_per_model() -> None:
    """Four cancer images (lesion radii 2, 3, 8, 9: small = radius <= the median 5.5) and
    four negatives; attention ranks the small ones first, holistic last."""
    from pathlib import Path

    from mammo_node.domain import Slot
    from trainer.data import ExamRecord, ImageRecord, LesionTruth, Manifest
    from trainer.report import ImageScores, localisation

    slots = [Slot.parse(s) for s in ("L-CC", "L-MLO", "R-CC", "R-MLO")]
    exams, truth, images = [], {}, []
    holistic = {0: [0.1, 0.2], 1: [5.0, 6.0]}  # exam 0 = small lesions, exam 1 = large
    attention = {0: [7.0, 8.0], 1: [5.0, 6.0]}
    for e in range(2):
        records = {s: ImageRecord(f"{e}-{s}", f"{e}/{s}.dcm", s, "dicom") for s in slots}
        exams.append(ExamRecord(f"study{e}", f"p{e}", "screening", "L", records))
        for k, slot in enumerate(slots):
            if k < 2:  # the left breast carries the cancer
                truth[f"{e}-{slot}"] = LesionTruth(10.0, 10.0, [2.0, 3.0, 8.0, 9.0][2 * e + k])
                scores = {"holistic": holistic[e][k], "attention": attention[e][k]}
            else:
                scores = {"holistic": 1.0 + k, "attention": 1.0 + k}
            images.append(
                ImageScores(f"study{e}", slot, int(k < 2), scores, (10.0, 10.0), (0, 0, 20, 20), 0)
            )
    result = localisation(images, Manifest(Path("."), exams, truth))
    assert result["n"] == 4 and result["coa_in_lesion_rate"] == 1.0
    small = result["small"]
    assert small["radius_at_most"] == 5.5 and small["n"] == 2
    assert small["image_auc"] == {"attention": 1.0, "holistic": 0.0}
    assert result["image_auc"]["holistic"] == 0.5
