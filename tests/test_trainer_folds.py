"""Folds: grouped by patient, stratified by screening and interval cancers, reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from trainer.data import ExamRecord
from trainer.errors import DataError
from trainer.folds import assign_folds


def cohort(seed: int = 0) -> list[ExamRecord]:
    rng = np.random.default_rng(seed)
    exams = []
    for p in range(120):
        for visit in range(int(rng.integers(1, 4))):  # 1-3 exams per woman
            outcome = rng.choice(["normal", "screening", "interval"], p=[0.75, 0.17, 0.08])
            side = "" if outcome == "normal" else str(rng.choice(["L", "R"]))
            exams.append(ExamRecord(f"{p}.{visit}", f"P{p}", str(outcome), side, {}))
    return exams


def test_patients_never_straddle_folds_and_cancers_are_spread_evenly() -> None:
    exams = cohort()
    folds = assign_folds(exams, folds=5, seed=1)
    assert set(folds) == {e.study_uid for e in exams}
    fold_of_patient: dict[str, set[int]] = {}
    for e in exams:
        fold_of_patient.setdefault(e.patient_id, set()).add(folds[e.study_uid])
    assert all(len(f) == 1 for f in fold_of_patient.values())
    for outcome in ("screening", "interval"):
        per_fold = Counter(folds[e.study_uid] for e in exams if e.outcome == outcome)
        total = sum(per_fold.values())
        assert len(per_fold) == 5
        assert max(per_fold.values()) - min(per_fold.values()) <= max(3, total // 5 // 2)
    assert assign_folds(exams, folds=5, seed=1) == folds  # reproducible
    assert assign_folds(exams, folds=5, seed=2) != folds


def test_too_few_patients_for_the_folds_is_refused() -> None:
    exams = [ExamRecord(f"{i}", f"P{i}", "normal", "", {}) for i in range(3)]
    with pytest.raises(DataError, match="3 patients cannot fill 5 folds"):
        assign_folds(exams, folds=5, seed=0)
