"""Statistics of Table 1: patient-level bootstrap CIs, the paired DeLong test, proportions.

- Bootstrap: a woman's exams are not independent (folds are grouped by patient for that
  reason), so resamples draw patients with replacement and take all their exams.
- DeLong et al. (1988), in the fast form of Sun & Xu (2014): the variance of a difference of
  two correlated AUCs measured on the same exams; two-sided p-value from the normal.
- Wilson score intervals for a sensitivity or specificity at a fixed threshold.
- Operating points fitted on a calibration set: exact (Clopper-Pearson) intervals for the
  population sensitivity and specificity, and the range a measurement on ``m`` new exams
  should fall in (beta-binomial). A threshold put at the k-th highest of n cancer scores
  has a population sensitivity distributed as Beta(k, n - k + 1) whatever the scores'
  distribution (order statistics); its mean k / (n + 1) is below the k / n measured on the
  fitting cancers, and the Clopper-Pearson lower end is that Beta's 2.5 % quantile. A
  measurement on m new cancers adds its own binomial noise: a 90 % point fitted on 14
  cancers (13 / 14) can measure 11 / 14 on 14 new ones and still be what was claimed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score


class Scored(Protocol):
    @property
    def scores(self) -> Mapping[str, float]: ...  # score per model


def image_aucs(positives: Sequence[Scored], negatives: Sequence[Scored]) -> dict[str, float]:
    """AUC per model (the score names all images share) of these positive images against
    these negative ones; empty when either side is."""
    if not positives or not negatives:
        return {}
    y = [1] * len(positives) + [0] * len(negatives)
    models = sorted(set.intersection(*(set(i.scores) for i in [*positives, *negatives])))
    return {
        m: float(roc_auc_score(y, [i.scores[m] for i in [*positives, *negatives]])) for m in models
    }


def patient_bootstrap_auc(
    y: np.ndarray,
    scores: np.ndarray,
    patients: Sequence[str],
    *,
    resamples: int,
    seed: int,
) -> tuple[float | None, float | None]:
    """95 % percentile interval of the AUC over patient-level resamples."""
    if resamples <= 0:
        return None, None
    groups: dict[str, list[int]] = {}
    for i, patient in enumerate(patients):
        groups.setdefault(patient, []).append(i)
    members = [np.array(v) for v in groups.values()]
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(resamples):
        picked = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[k] for k in picked])
        if 0 < y[idx].sum() < len(idx):
            reps.append(roc_auc_score(y[idx], scores[idx]))
    if not reps:
        return None, None
    return float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def _midrank_components(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and the DeLong structural components V10 (positives) and V01 (negatives)."""
    pos, neg = scores[y == 1], scores[y == 0]
    m, n = len(pos), len(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    tx, ty = rankdata(pos), rankdata(neg)
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return float(auc), v10, v01


def delong_paired(y: Sequence[int], first: Sequence[float], second: Sequence[float]) -> dict:
    """AUC(first) - AUC(second) on the same exams, its standard error, z and p (two-sided)."""
    y_arr = np.asarray(y, dtype=int)
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    m, n = int(y_arr.sum()), int(len(y_arr) - y_arr.sum())
    if m < 2 or n < 2:
        return {"difference": None, "se": None, "z": None, "p": None, "n": len(y_arr)}
    auc_a, v10_a, v01_a = _midrank_components(y_arr, a)
    auc_b, v10_b, v01_b = _midrank_components(y_arr, b)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    if var <= 0:
        return {
            "difference": diff,
            "se": 0.0,
            "z": None,
            "p": 1.0 if diff == 0 else 0.0,
            "n": len(y_arr),
        }
    se = math.sqrt(var)
    z = diff / se
    return {"difference": diff, "se": se, "z": z, "p": float(2 * norm.sf(abs(z))), "n": len(y_arr)}


def wilson(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion."""
    if total == 0:
        return math.nan, math.nan
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion."""
    from scipy.stats import beta

    if total == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha, successes, total - successes + 1))
    hi = 1.0 if successes == total else float(beta.ppf(1 - alpha, successes + 1, total - successes))
    return lo, hi


def expected_range(
    successes: int, total: int, new: int, *, order_statistic: bool, level: float = 0.95
) -> tuple[float, float]:
    """The proportion a measurement on ``new`` exams should show (central ``level`` range)
    for a rate measured as ``successes`` of ``total`` on the fitting exams.

    ``order_statistic``: the threshold was put at the ``successes``-th highest of these
    exams' scores (a sensitivity point): the population rate is Beta(k, n - k + 1);
    otherwise (a fixed threshold for these exams) the Jeffreys posterior Beta(k + 1/2,
    n - k + 1/2). The count on ``new`` exams is then beta-binomial.
    """
    from scipy.stats import betabinom

    if total == 0 or new == 0:
        return math.nan, math.nan
    if order_statistic:
        a, b = float(max(successes, 1)), float(total - successes + 1)
    else:
        a, b = successes + 0.5, total - successes + 0.5
    alpha = (1 - level) / 2
    lo, hi = betabinom.ppf([alpha, 1 - alpha], new, a, b)
    return float(lo) / new, float(hi) / new
