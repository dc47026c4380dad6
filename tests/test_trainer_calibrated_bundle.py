"""The shipped bundle keeps its word on exams nobody used: export --final-train, calibrate on
new exams, then other new exams are scored by the node's scorer and each operating point's
sensitivity and specificity, the probability and the category agree with what the bundle's
manifest claims (within the range the calibration set's counts allow for that many exams)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from safetensors.torch import load_file

from mammo_node.ml.bundle import load_bundle
from mammo_node.ml.inference import EnsembleScorer
from mammo_node.synth import SynthOptions, write_synthetic_dataset
from tests.helpers.trainer import TINY_CV, index_synthetic, invoke_trainer
from trainer.calibrate import study_hash
from trainer.data import Manifest
from trainer.stats import expected_range

invoke = invoke_trainer


def cohort(root: Path, exams: int, seed: int) -> Path:
    """Fresh synthetic exams (another seed: other women, other study UIDs) and their manifest."""
    write_synthetic_dataset(
        root / "data",
        SynthOptions(
            rows=96,
            columns=80,
            exams=exams,
            seed=seed,
            screening_fraction=0.4,
            interval_fraction=0.1,
            lesion_radius_mm=(8.0, 12.0),
        ),
    )
    manifest = root / "manifest.json"
    index_synthetic(root / "data", manifest)
    return manifest


def test_final_train_bundle_calibrated_on_new_exams_keeps_its_claims(tiny_cohort: Path) -> None:
    data, manifest, run = tiny_cohort / "data", tiny_cohort / "manifest.json", tiny_cohort / "run2"
    index_synthetic(data, manifest)
    invoke("cv", str(manifest), "--folds", "2", "--out", str(run), "--quiet", *TINY_CV)

    # export --final-train: both models retrained on every exam, shipped uncalibrated
    bundle_dir = tiny_cohort / "final-bundle"
    out = invoke("export", str(run), "--out", str(bundle_dir), "--final-train", "--name", "final")
    assert "final_train" in out
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest.training["source"] == "final_train"
    assert bundle.calibration is None and bundle.info.operating_points == ()
    studies = [e.study_uid for e in Manifest.load(manifest).exams]
    trained_on = json.loads((bundle_dir / "trained_on.json").read_text())
    assert sorted(trained_on) == sorted(study_hash(s) for s in studies)
    final = load_file(str(run / "final" / "holistic.safetensors"))
    fold = load_file(str(run / "fold_00" / "holistic.safetensors"))
    shipped = bundle.holistic.state_dict()
    assert all(torch.equal(shipped[k].float(), final[k].float()) for k in final)
    assert any(not torch.equal(final[k], fold[k]) for k in final if final[k].is_floating_point())
    assert (run / "final" / "attention.safetensors").is_file()

    # calibrated on 30 exams it never saw (no prevalence given: the set's own)
    calibration_manifest = cohort(tiny_cohort / "calibration", 30, seed=91)
    invoke("calibrate", str(bundle_dir), str(calibration_manifest))
    bundle = load_bundle(bundle_dir)
    calibration = bundle.calibration
    assert calibration is not None and calibration.exams == 30
    claims = {p.name: p for p in calibration.points}
    assert [p.name for p in bundle.info.operating_points] == list(claims)

    # 40 other new exams, scored by the node's own scorer (`evaluate` uses EnsembleScorer)
    held_out = cohort(tiny_cohort / "held-out", 40, seed=92)
    evaluation = tiny_cohort / "held-out" / "evaluation"
    evaluated = json.loads(
        invoke(
            "evaluate",
            str(bundle_dir),
            str(held_out),
            "--out",
            str(evaluation),
            "--json",
            "--bootstrap",
            "10",
        )
    )
    with (evaluation / "exam_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40
    scores = {r["study_uid"]: float(r["ensemble"]) for r in rows}
    cancer = {r["study_uid"]: r["outcome"] == "screening" for r in rows}
    cancers = [s for s in scores if cancer[s]]
    others = [s for s in scores if not cancer[s]]
    assert len(cancers) >= 10 and len(others) >= 10

    # what the node shows for an exam is what the manifest says for its exam score
    fresh = Manifest.load(held_out)
    scorer = EnsembleScorer(bundle, device="cpu", precision="fp32")
    for exam in fresh.exams[:6]:
        datasets = {slot: pydicom.dcmread(fresh.image_path(i)) for slot, i in exam.images.items()}
        result = scorer.score_exam(datasets, exam.study_uid)
        assert result.scores.exam_score == pytest.approx(scores[exam.study_uid], abs=1e-5)
        assert result.probability == calibration.probability(result.scores.exam_score)
        assert result.category == calibration.category(result.scores.exam_score)
        assert result.verdicts == {
            name: result.scores.exam_score >= claim.threshold for name, claim in claims.items()
        }

    measured = {p["name"]: p for p in evaluated["operating_points"]}
    assert set(measured) == set(claims)
    for name, claim in claims.items():
        sensitivity = float(np.mean([scores[s] >= claim.threshold for s in cancers]))
        specificity = float(np.mean([scores[s] < claim.threshold for s in others]))
        # the range the claim allows for a measurement on this many new exams
        lo, hi = expected_range(
            claim.true_positives,
            claim.positives,
            len(cancers),
            order_statistic=claim.chosen_on_cancers,
        )
        assert lo <= sensitivity <= hi, (name, sensitivity, (lo, hi), claim)
        lo, hi = expected_range(
            claim.true_negatives, claim.negatives, len(others), order_statistic=False
        )
        assert lo <= specificity <= hi, (name, specificity, (lo, hi), claim)
        # `evaluate` measures the same and says the point is as claimed
        assert measured[name]["sensitivity"] == pytest.approx(sensitivity)
        assert measured[name]["specificity"] == pytest.approx(specificity)
        assert measured[name]["as_claimed"] is True
        assert measured[name]["positives"] == len(cancers)

    # probability and category follow the exam score
    ordered = sorted(scores.values())
    probabilities = [calibration.probability(v) for v in ordered]
    categories = [calibration.category(v) for v in ordered]
    assert probabilities == sorted(probabilities) and categories == sorted(categories)
    # calibration in the large: mean probability vs the cancer rate, within 3 standard errors
    # of both sets' sampling (isotonic fits the calibration set's mean exactly)
    rate = len(cancers) / len(scores)
    mean_p = float(np.mean(probabilities))
    p = calibration.fitted_prevalence
    se = math.sqrt(p * (1 - p) * (1 / len(scores) + 1 / calibration.exams))
    assert abs(mean_p - rate) <= 3 * se, (mean_p, rate, se)
    # categories are the calibration set's deciles: about half of new exams above the median
    upper = float(np.mean([c > 5 for c in categories]))
    assert abs(upper - 0.5) <= 3 * math.sqrt(0.25 * (1 / len(scores) + 1 / calibration.exams))
