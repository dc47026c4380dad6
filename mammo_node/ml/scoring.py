"""Exam-level scoring rules of the paper: one place, used by the node and the trainer.

- ensemble image score = unweighted mean of holistic and attention scores;
- breast score = sum of its CC and MLO scores;
- exam score = max over the breasts.

Radiologist baselines (when reader scores per breast are given): one reader = max over
breasts; two readers = per breast the sum of both readers, then max.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mammo_node.domain import ExamScores, Laterality, OperatingPoint, Slot, View


def ensemble_score(holistic: float, attention: float) -> float:
    """The ensemble's image score: the unweighted mean of the two models."""
    return (float(holistic) + float(attention)) / 2.0


def breast_scores(view_scores: Mapping[Slot, float]) -> dict[Laterality, float]:
    """Per breast, the sum of its CC and MLO scores. A breast needs both views."""
    if not view_scores:
        raise ValueError('Argument "view_scores" is empty: an exam needs at least one breast.')
    out: dict[Laterality, float] = {}
    for lat in Laterality:
        views = {slot.view: float(s) for slot, s in view_scores.items() if slot.laterality is lat}
        if not views:
            continue
        if set(views) != {View.CC, View.MLO}:
            raise ValueError(
                f"Breast {lat.value} has views {sorted(v.value for v in views)}; "
                "its score needs both CC and MLO."
            )
        if not all(math.isfinite(v) for v in views.values()):
            raise ValueError(f"Breast {lat.value} has a non-finite view score: {views}.")
        out[lat] = views[View.CC] + views[View.MLO]
    return out


def score_exam(view_scores: Mapping[Slot, float]) -> ExamScores:
    """Breast scores (CC + MLO) and the exam score (max over breasts) from image scores."""
    breasts = breast_scores(view_scores)
    return ExamScores(breast_scores=breasts, exam_score=max(breasts.values()))


def one_reader_exam_score(reader: Mapping[Laterality, float]) -> float:
    """One radiologist: the max of the reader's breast scores."""
    if not reader:
        raise ValueError('Argument "reader" has no breast scores.')
    return max(float(v) for v in reader.values())


def two_reader_exam_score(
    first: Mapping[Laterality, float], second: Mapping[Laterality, float]
) -> float:
    """Two radiologists: per breast the sum of both readers, then the max."""
    if set(first) != set(second) or not first:
        raise ValueError(
            f"Both readers need scores for the same breasts, got {sorted(map(str, first))} and "
            f"{sorted(map(str, second))}."
        )
    return max(float(first[lat]) + float(second[lat]) for lat in first)


def verdicts(exam_score: float, points: tuple[OperatingPoint, ...]) -> dict[str, bool]:
    """Operating point name -> whether the exam score is at or above its threshold."""
    return {p.name: exam_score >= p.threshold for p in points}
