"""The packaged demo bundle: intact, labelled as a demo, and it really finds synthetic lesions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mammo_node.ml.bundle import default_bundle_path, load_bundle
from mammo_node.ml.calibration import Calibration
from mammo_node.ml.inference import EnsembleScorer
from mammo_node.synth import SynthOptions, generate_exams
from trainer.config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def scorer_bundle_calibration() -> Calibration:
    calibration = load_bundle(default_bundle_path()).calibration
    assert calibration is not None
    return calibration


@pytest.fixture(scope="module")
def scorer() -> EnsembleScorer:
    return EnsembleScorer(load_bundle(default_bundle_path()), device="cpu", precision="fp32")


def test_demo_bundle_is_verified_and_says_it_is_a_demo(scorer: EnsembleScorer) -> None:
    info = scorer.info
    assert info.is_demo and "demo" in info.name and "synthetic" in info.name
    assert info.label.endswith("(DEMO - not for clinical use)")
    assert info.score_kind == "logit_difference"
    names = {"sensitivity_85", "sensitivity_90", "sensitivity_95", "recall_rate_5"}
    assert {p.name for p in info.operating_points} == names


def test_demo_bundle_carries_its_own_calibration() -> None:
    bundle = load_bundle(default_bundle_path())
    calibration = bundle.calibration
    assert calibration is not None and calibration.prevalence == 0.007
    assert calibration.exams >= 200 and calibration.cancers >= 50  # fitted on held-out exams
    assert {p.name for p in calibration.points} == {p.name for p in bundle.info.operating_points}
    for point in calibration.points:  # each point says what it was measured on
        assert point.positives == calibration.cancers
        assert point.positives + point.negatives == calibration.exams
        assert point.true_positives / point.positives == pytest.approx(point.sensitivity)
        assert point.true_negatives / point.negatives == pytest.approx(point.specificity)
        low, high = point.sensitivity_ci
        assert low <= point.sensitivity <= high
    probabilities = [calibration.probability(s) for s in (-5.0, 0.0, 5.0, 10.0)]
    assert probabilities == sorted(probabilities) and 0 <= probabilities[0] < probabilities[-1] <= 1
    assert calibration.category(-100.0) == 1 and calibration.category(100.0) == 10


def test_demo_bundle_localises_with_the_trainers_default_coa_rule() -> None:
    # the bundle is what `make demo-bundle` exports from the documented run, which keeps the
    # trainer's default rule
    preprocess = load_bundle(default_bundle_path()).manifest.preprocess
    assert preprocess.coa_rule == TrainConfig().coa_rule == "breast_region"


def test_demo_model_ranks_cancers_first_and_points_at_lesions(scorer: EnsembleScorer) -> None:
    # Unseen exams (another seed, another image size than the training cohort).
    options = SynthOptions(
        rows=400,
        columns=320,
        exams=6,
        seed=4242,
        screening_fraction=0.5,
        interval_fraction=0.0,
        lesion_contrast=0.25,
        benign_fraction=0.0,
    )
    exams = list(generate_exams(options))
    scores = {e.study_uid: scorer.score_exam(e.datasets, e.study_uid) for e in exams}
    cancers = [scores[e.study_uid].scores.exam_score for e in exams if e.outcome == "screening"]
    normals = [scores[e.study_uid].scores.exam_score for e in exams if e.outcome == "normal"]
    assert min(cancers) > max(normals)
    calibration = scorer_bundle_calibration()
    assert min(calibration.category(c) for c in cancers) >= max(
        calibration.category(n) for n in normals
    )
    # COAs are in each file's own stored grid, right breasts included (mirrored storage).
    distances = []
    for exam in exams:
        for lesion in exam.truth:
            view = next(
                v
                for v in scores[exam.study_uid].views.values()
                if v.sop_instance_uid == lesion.sop_instance_uid
            )
            distances.append(math.dist(view.coa, (lesion.x + 0.5, lesion.y + 0.5)) / lesion.radius)
    assert len(distances) == 2 * len(cancers)
    assert np.median(distances) < 2.0  # within two lesion radii for most positive views
