"""Cross-validation folds: stratified by screening and interval cancer, grouped by patient.

One woman's exams never straddle train and test: all of a patient's exams fall in one fold.
Strata are the exam classes (normal, screening cancer, interval cancer); a patient's stratum
is her most serious exam (screening > interval > normal) so groups stay whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from trainer.data import ExamRecord
from trainer.errors import DataError

_SEVERITY = {0: 0, 2: 1, 1: 2}  # normal < interval < screening


def assign_folds(exams: Sequence[ExamRecord], *, folds: int, seed: int) -> dict[str, int]:
    """study_uid -> fold index in 0..folds-1."""
    if folds < 2:
        raise DataError(f'Argument "folds" should be at least 2, got {folds}.')
    patients = sorted({e.patient_id for e in exams})
    if not patients:
        raise DataError("No usable exams to split into folds (all were left out; see the log).")
    if len(patients) < folds:
        raise DataError(
            f"{len(patients)} patients cannot fill {folds} folds; use --folds "
            f"{len(patients)} or fewer."
        )
    worst: dict[str, int] = {}
    for e in exams:
        cls = e.exam_class
        if _SEVERITY[cls] >= _SEVERITY.get(worst.get(e.patient_id, 0), 0):
            worst[e.patient_id] = cls
    strata = np.array([worst[e.patient_id] for e in exams])
    number = {p: i for i, p in enumerate(patients)}
    groups = np.array([number[e.patient_id] for e in exams])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out: dict[str, int] = {}
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(exams)), strata, groups)):
        for i in test:
            out[exams[i].study_uid] = fold
    return out
