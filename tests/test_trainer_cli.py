"""mammo-train end to end on a tiny synthetic cohort: index -> cv -> report -> export -> score."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from mammo_node.domain import Slot
from mammo_node.ml.bundle import load_bundle
from mammo_node.ml.inference import EnsembleScorer
from mammo_node.synth import SynthOptions, write_synthetic_dataset
from tests.helpers.trainer import TINY_CV, index_synthetic, invoke_trainer
from trainer.cli import app

runner = CliRunner()


invoke = invoke_trainer  # the command's stdout (logs and progress kept apart)


def test_index_cv_report_export_and_the_node_scores_with_the_bundle(tiny_cohort: Path) -> None:
    data, manifest, run = tiny_cohort / "data", tiny_cohort / "manifest.json", tiny_cohort / "run"
    out = index_synthetic(data, manifest)
    assert '"exams": 12' in out

    invoke("cv", str(manifest), "--folds", "2", "--out", str(run), "--quiet", *TINY_CV)
    with (run / "cv_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and {r["fold"] for r in rows} == {"0", "1"}
    assert all(
        float(r["ensemble"]) == (float(r["holistic"]) + float(r["attention"])) / 2 for r in rows
    )
    folds = json.loads((run / "folds.json").read_text())
    labels = {r["study_uid"]: r["patient_id"] for r in csv.DictReader((data / "labels.csv").open())}
    patient_folds: dict[str, set[int]] = {}
    for study, fold in folds.items():
        patient_folds.setdefault(labels[study], set()).add(fold)
    assert all(len(f) == 1 for f in patient_folds.values())

    # Resuming a finished run does no work; other settings are refused.
    invoke("cv", str(manifest), "--folds", "2", "--out", str(run), "--quiet", *TINY_CV)
    refused = runner.invoke(
        app,
        [
            "cv",
            str(manifest),
            "--folds",
            "2",
            "--out",
            str(run),
            "--quiet",
            *TINY_CV,
            "--epochs",
            "3",
        ],
    )
    assert refused.exit_code == 2 and "other settings {'epochs': (1, 3)}" in " ".join(
        refused.output.split()
    )

    # The paper's default start: ImageNet weights, found in torch hub's cache (TORCH_HOME).
    recorded = json.loads((run / "run.json").read_text())["init"]
    assert recorded["init"] == "imagenet" and recorded["file"].endswith("resnet18-f37072fd.pth")

    result = json.loads(invoke("report", str(run), "--json", "--bootstrap", "50"))
    assert {"holistic", "attention", "ensemble", "one_radiologist", "two_radiologists"} <= set(
        result["rows"]
    )
    assert result["init"]["init"] == "imagenet"
    for row in result["rows"].values():
        for task in ("screening", "screening_interval"):
            entry = row[task]
            assert 0.0 <= entry["auc"] <= 1.0 and len(entry["ci"]) == 2
            assert entry["n"] == 12 and entry["positives"] >= 1
    delong = result["comparisons"]["ensemble_vs_holistic"]["screening"]
    assert delong["n"] == 12 and (delong["p"] is None or 0.0 <= delong["p"] <= 1.0)
    assert "ensemble_vs_attention" in result["comparisons"]
    assert result["localization"]["n"] > 0
    assert 0.0 <= result["localization"]["coa_in_lesion_rate"] <= 1.0
    per_fold = result["folds"]["folds"]
    assert set(per_fold) == {"0", "1"}  # the run's own records, per fold
    for fold in per_fold.values():
        assert fold["holistic"]["epochs"] >= 1 and fold["holistic"]["loss"] > 0
        assert len(fold["holistic"]["loss_history"]) == fold["holistic"]["epochs"]
        assert fold["attention"]["loss"] > 0
    assert result["folds"]["flagged"] == []  # two folds: no median to stand out from
    assert (run / "report" / "roc.png").stat().st_size > 1000
    assert "| ensemble |" in (run / "report" / "table.md").read_text()
    assert "| 12 (" in (run / "report" / "table.md").read_text()  # n (cancers) on every row

    # A fresh machine: matplotlib builds its font cache and says so; stdout stays JSON.
    fresh = tiny_cohort / "fresh-home"
    env = {**os.environ, "MPLCONFIGDIR": str(fresh / "mpl"), "HOME": str(fresh)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.cli",
            "report",
            str(run),
            "--json",
            "--bootstrap",
            "5",
            "--out",
            str(tiny_cohort / "fresh-report"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["rows"]["ensemble"]["screening"]["n"] == 12
    assert (fresh / "mpl").is_dir()  # the font cache really was made in this run

    external = tiny_cohort / "external.csv"
    external.write_text("study_uid,score\n" + "".join(f"{s},{i}\n" for i, s in enumerate(folds)))
    result = json.loads(
        invoke(
            "report",
            str(run),
            "--json",
            "--bootstrap",
            "20",
            "--external",
            f"wu_pretrained={external}",
        )
    )
    assert "wu_pretrained" in result["rows"]

    subsampled = json.loads(
        invoke("report", str(run), "--json", "--bootstrap", "20", "--subsample-negatives", "2")
    )
    assert subsampled["counts"]["normal"] == 2
    assert subsampled["counts"]["screening"] == result["counts"]["screening"]

    # A run made with --init-weights/--train-head-only is the paper's "Adapted Pretrained".
    adapted = tiny_cohort / "adapted-run"
    adapted.mkdir()
    shutil.copy(run / "cv_scores.csv", adapted / "cv_scores.csv")
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["train_head_only"] = True
    (adapted / "run.json").write_text(json.dumps(meta))
    rows = json.loads(invoke("report", str(adapted), "--json", "--bootstrap", "20"))["rows"]
    assert {"adapted_pretrained", "adapted_pretrained_attention"} <= set(rows)
    assert "holistic" not in rows
    assert rows["adapted_pretrained"] == result["rows"]["holistic"]

    bundle_dir = tiny_cohort / "bundle"
    out = invoke(
        "export",
        str(run),
        "--out",
        str(bundle_dir),
        "--best-fold",
        "--name",
        "tiny-demo",
        "--demo",
        "--storage-dtype",
        "float16",
    )
    assert "best_fold" in out
    bundle = load_bundle(bundle_dir)
    info = bundle.info
    assert info.is_demo and info.name == "tiny-demo"
    # operating points and calibration of the fold model shipped, from its held-out exams
    names = [p.name for p in info.operating_points]
    assert names == ["sensitivity_95", "sensitivity_90", "sensitivity_85", "recall_rate_5"]
    calibration = bundle.calibration
    assert calibration is not None and "held-out fold" in calibration.source
    assert calibration.exams == 6 and len(calibration.category_edges) == 9
    assert bundle.manifest.training["init"]["init"] == "imagenet"
    assert bundle.manifest.preprocess.input_size == 48
    assert bundle.manifest.preprocess.coa_rule == "breast_region"
    assert (
        bundle.manifest.cv_aucs["ensemble"]["screening"]["auc"]
        == result["rows"]["ensemble"]["screening"]["auc"]
    )

    study = next(iter(folds))
    datasets = {Slot.parse(p.stem): pydicom.dcmread(p) for p in (data / study).glob("*.dcm")}
    exam = EnsembleScorer(bundle, device="cpu", precision="fp32").score_exam(datasets, study)
    assert set(exam.views) == set(datasets)
    assert set(exam.verdicts) == set(names)

    # Calibrating on exams it trained on is refused; on new exams it rewrites the manifest.
    refused = runner.invoke(app, ["calibrate", str(bundle_dir), str(manifest)])
    assert refused.exit_code == 2 and "used to train this bundle" in " ".join(
        refused.output.split()
    )
    new = tiny_cohort / "new"
    write_synthetic_dataset(
        new / "data",
        SynthOptions(
            rows=96,
            columns=80,
            exams=10,
            seed=77,
            screening_fraction=0.4,
            interval_fraction=0.1,
            lesion_radius_mm=(8.0, 12.0),
        ),
    )
    invoke(
        "index",
        str(new / "data"),
        "--labels",
        str(new / "data" / "labels.csv"),
        "--truth",
        str(new / "data" / "truth.csv"),
        "--out",
        str(new / "manifest.json"),
    )
    fitted = json.loads(
        invoke(
            "calibrate",
            str(bundle_dir),
            str(new / "manifest.json"),
            "--json",
            "--prevalence",
            "0.01",
        )
    )
    assert fitted["exams"] == 10 and fitted["prevalence"] == 0.01
    recalibrated = load_bundle(bundle_dir)
    assert recalibrated.calibration is not None and recalibrated.calibration.exams == 10
    assert recalibrated.manifest.weights == bundle.manifest.weights  # weights untouched
    assert [p.name for p in recalibrated.info.operating_points] == names

    evaluated = json.loads(
        invoke(
            "evaluate",
            str(bundle_dir),
            str(new / "manifest.json"),
            "--out",
            str(new / "evaluation"),
            "--json",
            "--bootstrap",
            "20",
        )
    )
    assert evaluated["rows"]["ensemble"]["screening"]["n"] == 10
    assert {p["name"] for p in evaluated["operating_points"]} == set(names)
    # the exams it was calibrated on: the measured sensitivities are the claimed ones
    for point in evaluated["operating_points"]:
        assert point["sensitivity"] == pytest.approx(point["claimed_sensitivity"])
    assert sum(evaluated["categories"].values()) == 10
    assert (new / "evaluation" / "reliability.png").stat().st_size > 1000
    assert (new / "evaluation" / "roc.png").stat().st_size > 1000
