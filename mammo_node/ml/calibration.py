"""What an exam score means, for the one model it was fitted for (stored in its bundle).

A bundle's raw exam score (breast = CC + MLO, exam = max, of logit differences) has no unit
and changes with every retraining. ``Calibration`` carries, fitted on exams that model never
trained on:

- ``probability(score)``: probability that the exam is a screening-detected cancer, by
  isotonic regression (monotone, the default) or Platt scaling (a logistic curve), restated
  at ``prevalence`` (Bayes' rule on the odds) when the fitting exams had another one
  (``fitted_prevalence``) - e.g. a cancer-enriched validation set restated at a screening
  population's 0.6 %;
- ``category(score)``: 1-10, the decile of a screening population's exam scores the score
  falls in (10 = the top 10 %), as commercial readers show;
- ``points``: operating points (sensitivity 85 / 90 / 95 % and a recall rate) with the
  sensitivity and specificity measured on the fitting exams, the counts they come from and
  exact 95 % intervals of the population values (``trainer.stats``: a threshold put at the
  k-th highest of n cancer scores has a population sensitivity of Beta(k, n - k + 1), so the
  fitting set's size sets the interval; the trainer's ``evaluate`` turns the counts into the
  range a measurement on a given number of new exams should fall in).

Pure: numpy only; the fitting lives in the trainer (``trainer.calibrate``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("isotonic", "platt")


@dataclass(frozen=True)
class PointDetail:
    """An operating point as measured on the exams the calibration was fitted on."""

    name: str
    threshold: float
    target: str  # e.g. "sensitivity 0.90" or "recall rate 0.05"
    sensitivity: float
    specificity: float
    recall_rate: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    # the counts measured on the fitting exams (0 in bundles calibrated before they were kept)
    true_positives: int = 0
    positives: int = 0
    true_negatives: int = 0
    negatives: int = 0
    # True when the threshold was put at one of the cancers' scores (a sensitivity point)
    chosen_on_cancers: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threshold": self.threshold,
            "target": self.target,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "recall_rate": self.recall_rate,
            "sensitivity_ci": list(self.sensitivity_ci),
            "specificity_ci": list(self.specificity_ci),
            "true_positives": self.true_positives,
            "positives": self.positives,
            "true_negatives": self.true_negatives,
            "negatives": self.negatives,
            "chosen_on_cancers": self.chosen_on_cancers,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PointDetail:
        return cls(
            name=str(data["name"]),
            threshold=float(data["threshold"]),
            target=str(data.get("target", "")),
            sensitivity=float(data["sensitivity"]),
            specificity=float(data["specificity"]),
            recall_rate=float(data.get("recall_rate", math.nan)),
            sensitivity_ci=tuple(map(float, data["sensitivity_ci"])),  # type: ignore[arg-type]
            specificity_ci=tuple(map(float, data["specificity_ci"])),  # type: ignore[arg-type]
            true_positives=int(data.get("true_positives", 0)),
            positives=int(data.get("positives", 0)),
            true_negatives=int(data.get("true_negatives", 0)),
            negatives=int(data.get("negatives", 0)),
            chosen_on_cancers=bool(data.get("chosen_on_cancers", False)),
        )


@dataclass(frozen=True)
class Calibration:
    method: str  # "isotonic" or "platt"
    prevalence: float  # screening-cancer prevalence the probabilities are stated at
    fitted_prevalence: float  # the prevalence among the fitting exams
    knots: tuple[float, ...] = ()  # isotonic: exam scores ...
    values: tuple[float, ...] = ()  # ... and the probabilities there (linear in between)
    slope: float = 0.0  # platt: p = 1 / (1 + exp(-(slope * score + intercept)))
    intercept: float = 0.0
    category_edges: tuple[float, ...] = ()  # 9 ascending deciles of population exam scores
    points: tuple[PointDetail, ...] = ()
    exams: int = 0  # how many exams it was fitted on ...
    cancers: int = 0  # ... of which screening-detected cancers
    patients: int = 0
    source: str = ""  # which exams (e.g. "held-out fold 3 of the CV run")
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f'Argument "method" should be one of {METHODS}, got {self.method!r}.')
        for name in ("prevalence", "fitted_prevalence"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f'Argument "{name}" should be in (0, 1), got {value!r}.')
        if self.method == "isotonic" and (not self.knots or len(self.knots) != len(self.values)):
            raise ValueError("An isotonic calibration needs as many knots as values (>= 1).")
        if list(self.knots) != sorted(self.knots):
            raise ValueError('Argument "knots" should be ascending.')
        if list(self.category_edges) != sorted(self.category_edges):
            raise ValueError('Argument "category_edges" should be ascending.')

    def _fitted_probability(self, score: float) -> float:
        if self.method == "isotonic":
            return float(np.interp(score, self.knots, self.values))
        z = self.slope * score + self.intercept
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def probability(self, score: float) -> float:
        """P(screening-detected cancer | exam score) at ``prevalence``."""
        p = min(1.0, max(0.0, self._fitted_probability(float(score))))
        if p in (0.0, 1.0) or self.prevalence == self.fitted_prevalence:
            return p
        shift = (self.prevalence / (1 - self.prevalence)) / (
            self.fitted_prevalence / (1 - self.fitted_prevalence)
        )
        odds = p / (1 - p) * shift
        return odds / (1 + odds)

    def category(self, score: float) -> int:
        """1-10: the population decile of the score (a score on an edge goes up)."""
        if not self.category_edges:
            raise ValueError("This calibration has no category scale.")
        return 1 + bisect.bisect_right(list(self.category_edges), float(score))

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "prevalence": self.prevalence,
            "fitted_prevalence": self.fitted_prevalence,
            "knots": list(self.knots),
            "values": list(self.values),
            "slope": self.slope,
            "intercept": self.intercept,
            "category_edges": list(self.category_edges),
            "points": [p.to_json() for p in self.points],
            "exams": self.exams,
            "cancers": self.cancers,
            "patients": self.patients,
            "source": self.source,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            method=str(data["method"]),
            prevalence=float(data["prevalence"]),
            fitted_prevalence=float(data["fitted_prevalence"]),
            knots=tuple(map(float, data.get("knots", ()))),
            values=tuple(map(float, data.get("values", ()))),
            slope=float(data.get("slope", 0.0)),
            intercept=float(data.get("intercept", 0.0)),
            category_edges=tuple(map(float, data.get("category_edges", ()))),
            points=tuple(PointDetail.from_json(p) for p in data.get("points", ())),
            exams=int(data.get("exams", 0)),
            cancers=int(data.get("cancers", 0)),
            patients=int(data.get("patients", 0)),
            source=str(data.get("source", "")),
            extra=dict(data.get("extra", {})),
        )
