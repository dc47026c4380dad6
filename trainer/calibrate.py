"""Fit a bundle's calibration, category scale and operating points on held-out exams.

Everything is fitted for one model's exam scores (the weights in that bundle), on exams it
never trained on: a best-fold export uses that fold's held-out exams; any bundle can be
(re)calibrated with ``mammo-train calibrate BUNDLE MANIFEST`` on another site's or a later
period's exams. The positive class is a screening-detected cancer (the paper's first task).

When the fitting exams are enriched with cancers, ``prevalence`` restates the probabilities
(odds shifted by Bayes' rule) and reweights the exams for the decile scale and the
recall-rate point, so all three describe a screening population at that prevalence.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from mammo_node.domain import OperatingPoint
from mammo_node.ml.calibration import METHODS, Calibration, PointDetail
from trainer.errors import RunError
from trainer.stats import clopper_pearson

DEFAULT_SENSITIVITIES = (0.85, 0.9, 0.95)
DEFAULT_RECALL_RATE = 0.05
TRAINED_ON = "trained_on.json"  # in a bundle: hashed study UIDs of its training exams


def study_hash(study_uid: str) -> str:
    """A short hash of a study UID (no identifiers in a bundle, overlap still checkable)."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:16]


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w) / w.sum()
    return float(v[min(len(v) - 1, int(np.searchsorted(cum, q, side="left")))])


def fit_calibration(
    scores: Mapping[str, float],
    outcomes: Mapping[str, str],
    patients: Mapping[str, str],
    *,
    method: str = "isotonic",
    prevalence: float | None = None,
    sensitivities: Sequence[float] = DEFAULT_SENSITIVITIES,
    recall_rate: float = DEFAULT_RECALL_RATE,
    source: str = "",
) -> tuple[Calibration, tuple[OperatingPoint, ...]]:
    """Calibration + operating points for exam ``scores`` (study -> score)."""
    if method not in METHODS:
        raise RunError(f'Argument "method" should be one of {METHODS}, got {method!r}.')
    studies = sorted(scores)
    s = np.array([float(scores[k]) for k in studies])
    y = np.array([outcomes[k] == "screening" for k in studies], dtype=int)
    n_pos, n = int(y.sum()), len(y)
    if n_pos < 2 or n - n_pos < 2:
        raise RunError(
            f"Calibration needs at least 2 screening cancers and 2 other exams; got {n_pos} of {n}."
        )
    fitted = n_pos / n
    target = fitted if prevalence is None else float(prevalence)
    if not 0 < target < 1:
        raise RunError(f'Argument "prevalence" should be in (0, 1), got {prevalence!r}.')
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
        knots, values = tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_))
        slope = intercept = 0.0
    else:
        logistic = LogisticRegression(C=1e6).fit(s[:, None], y)
        knots, values = (), ()
        slope, intercept = float(logistic.coef_[0, 0]), float(logistic.intercept_[0])
    # Weights that make the fitting exams a screening population at the target prevalence.
    weights = np.where(y == 1, target / fitted, (1 - target) / (1 - fitted))
    edges = tuple(_weighted_quantile(s, weights, q / 10) for q in range(1, 10))
    details = _points(s, y, weights, sensitivities, recall_rate)
    calibration = Calibration(
        method=method,
        prevalence=target,
        fitted_prevalence=fitted,
        knots=knots,
        values=values,
        slope=slope,
        intercept=intercept,
        category_edges=edges,
        points=details,
        exams=n,
        cancers=n_pos,
        patients=len({patients.get(k, k) for k in studies}),
        source=source,
    )
    points = tuple(
        OperatingPoint(p.name, p.threshold, p.sensitivity, p.specificity) for p in details
    )
    return calibration, points


def _measure(
    s: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    threshold: float,
    name: str,
    target: str,
    *,
    chosen_on_cancers: bool,
) -> PointDetail:
    flagged = s >= threshold
    tp, pos = int((flagged & (y == 1)).sum()), int(y.sum())
    tn, neg = int((~flagged & (y == 0)).sum()), int((y == 0).sum())
    return PointDetail(
        name=name,
        threshold=float(threshold),
        target=target,
        sensitivity=tp / pos,
        specificity=tn / neg,
        recall_rate=float(weights[flagged].sum() / weights.sum()),
        sensitivity_ci=clopper_pearson(tp, pos),
        specificity_ci=clopper_pearson(tn, neg),
        true_positives=tp,
        positives=pos,
        true_negatives=tn,
        negatives=neg,
        chosen_on_cancers=chosen_on_cancers,
    )


def _points(
    s: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    sensitivities: Sequence[float],
    recall_rate: float,
) -> tuple[PointDetail, ...]:
    pos = np.sort(s[y == 1])[::-1]
    out = []
    for target in sorted(sensitivities, reverse=True):
        if not 0 < target <= 1:
            raise RunError(f"A sensitivity should be in (0, 1], got {target}.")
        threshold = float(pos[max(0, math.ceil(target * len(pos)) - 1)])
        out.append(
            _measure(
                s,
                y,
                weights,
                threshold,
                f"sensitivity_{round(target * 100):d}",
                f"sensitivity {target:.2f}",
                chosen_on_cancers=True,
            )
        )
    if recall_rate:
        if not 0 < recall_rate < 1:
            raise RunError(f'Argument "recall_rate" should be in (0, 1), got {recall_rate}.')
        # the lowest threshold at one of the scores that flags at most recall_rate
        candidates = np.unique(s)[::-1]
        threshold = float(candidates[0]) + 1e-9
        for c in candidates:
            if weights[s >= c].sum() / weights.sum() > recall_rate:
                break
            threshold = float(c)
        out.append(
            _measure(
                s,
                y,
                weights,
                threshold,
                f"recall_rate_{recall_rate * 100:g}",
                f"recall rate {recall_rate:.3f}",
                chosen_on_cancers=False,
            )
        )
    return tuple(out)
