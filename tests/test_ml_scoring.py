"""The paper's aggregation rules: ensemble mean, breast sum, exam max, reader baselines."""

from __future__ import annotations

import pytest

from mammo_node.domain import Laterality, OperatingPoint, Slot
from mammo_node.ml.scoring import (
    ensemble_score,
    one_reader_exam_score,
    score_exam,
    two_reader_exam_score,
    verdicts,
)

L, R = Laterality.L, Laterality.R


def test_ensemble_is_unweighted_mean() -> None:
    assert ensemble_score(1.0, 3.0) == 2.0
    assert ensemble_score(-2.5, 0.5) == -1.0


def test_breast_is_sum_of_views_and_exam_is_max_of_breasts() -> None:
    scores = {
        Slot.parse("L-CC"): 0.5,
        Slot.parse("L-MLO"): 1.0,
        Slot.parse("R-CC"): 2.0,
        Slot.parse("R-MLO"): -0.25,
    }
    result = score_exam(scores)
    assert result.breast_scores == {L: 1.5, R: 1.75}
    assert result.exam_score == 1.75
    # A single strongly suspicious view does not win over a breast where both views agree.
    scores[Slot.parse("R-MLO")] = -1.0
    assert score_exam(scores).exam_score == 1.5


def test_one_complete_breast_is_scored_but_half_a_breast_is_refused() -> None:
    assert score_exam({Slot.parse("L-CC"): 1.0, Slot.parse("L-MLO"): 2.0}).exam_score == 3.0
    with pytest.raises(ValueError, match=r"Breast R has views \['CC'\]"):
        score_exam({Slot.parse("L-CC"): 1.0, Slot.parse("L-MLO"): 2.0, Slot.parse("R-CC"): 0.0})
    with pytest.raises(ValueError, match="empty"):
        score_exam({})


def test_radiologist_baselines() -> None:
    assert one_reader_exam_score({L: 1.0, R: 3.0}) == 3.0
    # Two readers: per breast sum first (L: 1+4=5, R: 3+1=4), then max -> 5, not 3+4.
    assert two_reader_exam_score({L: 1.0, R: 3.0}, {L: 4.0, R: 1.0}) == 5.0
    with pytest.raises(ValueError, match="same breasts"):
        two_reader_exam_score({L: 1.0}, {R: 1.0})


def test_verdicts_at_or_above_threshold() -> None:
    points = (OperatingPoint("sensitivity_90", 1.0, 0.9), OperatingPoint("sensitivity_85", 2.0))
    assert verdicts(1.0, points) == {"sensitivity_90": True, "sensitivity_85": False}
