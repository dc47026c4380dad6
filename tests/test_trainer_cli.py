"""mammo-train end to end on a tiny synthetic cohort: index -> cv -> report -> export -> score."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pydicom
from conftest_trainer import TINY_CV, tiny_cohort  # noqa: F401 - fixture
from typer.testing import CliRunner

from mammo_node.domain import Slot
from mammo_node.ml.bundle import load_bundle
from mammo_node.ml.inference import EnsembleScorer
from trainer.cli import app

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_index_cv_report_export_and_the_node_scores_with_the_bundle(tiny_cohort: Path) -> None:  # noqa: F811
    data, manifest, run = tiny_cohort / "data", tiny_cohort / "manifest.json", tiny_cohort / "run"
    out = invoke(
        "index",
        str(data),
        "--labels",
        str(data / "labels.csv"),
        "--truth",
        str(data / "truth.csv"),
        "--out",
        str(manifest),
    )
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

    result = json.loads(invoke("report", str(run), "--json", "--bootstrap", "50"))
    assert {"holistic", "attention", "ensemble", "one_radiologist", "two_radiologists"} <= set(
        result["rows"]
    )
    for row in result["rows"].values():
        for task in ("screening", "screening_interval"):
            entry = row[task]
            assert 0.0 <= entry["auc"] <= 1.0 and len(entry["ci"]) == 2
    assert result["localization"]["n"] > 0
    assert 0.0 <= result["localization"]["coa_in_lesion_rate"] <= 1.0
    assert (run / "report" / "roc.png").stat().st_size > 1000
    assert "| ensemble |" in (run / "report" / "table.md").read_text()

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
    assert [p.name for p in info.operating_points] == ["sensitivity_90", "sensitivity_85"]
    assert bundle.manifest.preprocess.input_size == 48
    assert (
        bundle.manifest.cv_aucs["ensemble"]["screening"]["auc"]
        == result["rows"]["ensemble"]["screening"]["auc"]
    )

    study = next(iter(folds))
    datasets = {Slot.parse(p.stem): pydicom.dcmread(p) for p in (data / study).glob("*.dcm")}
    exam = EnsembleScorer(bundle, device="cpu", precision="fp32").score_exam(datasets, study)
    assert set(exam.views) == set(datasets)
    assert set(exam.verdicts) == {"sensitivity_90", "sensitivity_85"}
