"""Turn a cross-validated run into a model bundle the node loads.

Two sources for the weights (the manifest says which):
- ``final_train``: both models retrained on every usable exam with the run's settings (what a
  site deploys; the CV figures estimate its performance);
- ``best_fold``: the fold whose held-out ensemble AUC (screening vs rest) was highest (no
  extra training; an optimistic pick, said so in the manifest).
Calibration and operating points must belong to the weights shipped (pooled CV scores of
ten fold models have another score scale than any one of them):
- ``best_fold``: fitted on that fold's held-out exams, scored by that very model;
- ``final_train``: the model has no held-out exams; the bundle ships uncalibrated, without
  operating points, until ``mammo-train calibrate BUNDLE MANIFEST`` fits them on exams it
  never trained on (another period, another site).
Both write ``trained_on.json`` (hashed study UIDs of the training exams) so ``calibrate``
and ``evaluate`` can refuse exams the model was trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from mammo_node.domain import OperatingPoint
from mammo_node.ml.bundle import BundleManifest, save_bundle
from trainer.calibrate import (
    DEFAULT_RECALL_RATE,
    DEFAULT_SENSITIVITIES,
    TRAINED_ON,
    fit_calibration,
    study_hash,
)
from trainer.config import TrainConfig
from trainer.cv import CrossValidation, Fold
from trainer.data import Manifest
from trainer.distributed import init_distributed, shutdown
from trainer.errors import RunError
from trainer.progress import Reporter
from trainer.report import build_evaluation, model_exam_scores, read_cv_scores, table

SOURCES = ("final_train", "best_fold")


def operating_points(
    scores: dict[str, float], outcomes: dict[str, str], sensitivities: Sequence[float]
) -> tuple[OperatingPoint, ...]:
    """The highest threshold reaching each sensitivity for screening cancers vs the rest."""
    pos = np.sort([s for k, s in scores.items() if outcomes[k] == "screening"])[::-1]
    neg = np.array([s for k, s in scores.items() if outcomes[k] != "screening"])
    if len(pos) == 0 or len(neg) == 0:
        raise RunError("Operating points need screening cancers and other exams in the CV scores.")
    points = []
    for target in sorted(sensitivities, reverse=True):
        if not 0 < target <= 1:
            raise RunError(f"A sensitivity should be in (0, 1], got {target}.")
        threshold = float(pos[max(0, math.ceil(target * len(pos)) - 1)])
        points.append(
            OperatingPoint(
                name=f"sensitivity_{round(target * 100):d}",
                threshold=threshold,
                sensitivity=float(np.mean(pos >= threshold)),
                specificity=float(np.mean(neg < threshold)),
            )
        )
    return tuple(points)


def best_fold(run_dir: Path, outcomes: dict[str, str]) -> int:
    images = read_cv_scores(run_dir / "cv_scores.csv")
    aucs: dict[int, float] = {}
    for fold in sorted({i.fold for i in images}):
        exam = model_exam_scores([i for i in images if i.fold == fold])["ensemble"]
        y = [outcomes[s] == "screening" for s in exam]
        if 0 < sum(y) < len(y):
            aucs[fold] = float(roc_auc_score(y, list(exam.values())))
    if not aucs:
        raise RunError("No fold has both screening cancers and other exams; use --final-train.")
    return max(sorted(aucs), key=lambda k: aucs[k])


def train_final(run_dir: Path, cfg: TrainConfig, manifest_path: Path) -> Path:
    """Train holistic + attention on all usable exams into RUN_DIR/final (resumable)."""
    info = init_distributed(cfg.device)
    try:
        with Reporter(enabled=info.is_main) as reporter:
            cv = CrossValidation(manifest_path, run_dir, cfg, reporter, info)
            cv.cache.build(cv.manifest, info, reporter, workers=cv.workers)
            fold = Fold(cfg.folds, run_dir / "final", cv.usable_exams(), [])
            fold.directory.mkdir(parents=True, exist_ok=True)
            holistic = cv.holistic(fold)
            if not (fold.directory / "attention.safetensors").is_file():
                crops = cv.roi_cache(fold, cv.rois(fold, holistic))
                cv.attention(fold, crops)
                crops.remove(info)
            return fold.directory
    finally:
        shutdown(info)


def export_bundle(
    run_dir: Path,
    out: Path,
    *,
    source: str,
    name: str,
    version: str,
    is_demo: bool,
    sensitivities: Sequence[float] = DEFAULT_SENSITIVITIES,
    recall_rate: float = DEFAULT_RECALL_RATE,
    calibration_method: str = "isotonic",
    prevalence: float | None = None,
    storage_dtype: str = "float32",
    bootstrap: int = 200,
) -> BundleManifest:
    if source not in SOURCES:
        raise RunError(f'Argument "source" should be one of {SOURCES}, got {source!r}.')
    run = json.loads((run_dir / "run.json").read_text())
    cfg = TrainConfig.from_dict(run["config"])
    manifest = Manifest.load(Path(run["manifest"]))
    evaluation, _, _, _ = build_evaluation(run_dir, bootstrap=bootstrap)
    calibration = None
    points: tuple[OperatingPoint, ...] = ()
    if source == "best_fold":
        fold = best_fold(run_dir, evaluation.outcomes)
        weights_dir = run_dir / f"fold_{fold:02d}"
        held_out = model_exam_scores(
            [i for i in read_cv_scores(run_dir / "cv_scores.csv") if i.fold == fold]
        )["ensemble"]
        calibration, points = fit_calibration(
            held_out,
            evaluation.outcomes,
            evaluation.patients,
            method=calibration_method,
            prevalence=prevalence,
            sensitivities=sensitivities,
            recall_rate=recall_rate,
            source=f"held-out fold {fold} of the CV run (scored by this fold's model)",
        )
        trained = [s for s in evaluation.studies if s not in held_out]
        detail: dict[str, Any] = {
            "source": "best_fold",
            "fold": fold,
            "note": (
                "weights of the fold with the best held-out ensemble AUC; the CV AUCs below are "
                "over all folds; calibration and operating points from that fold's held-out "
                "exams"
            ),
        }
    else:
        weights_dir = train_final(run_dir, cfg, Path(run["manifest"]))
        trained = list(evaluation.studies)
        detail = {
            "source": "final_train",
            "note": (
                "trained on all usable exams; CV AUCs estimate its performance; no held-out "
                "exams: run `mammo-train calibrate` for calibration and operating points"
            ),
        }
    aucs = {row: entries for row, entries in table(evaluation).items()}
    summary = _training_summary(manifest, cfg, detail)
    summary["init"] = run.get("init", {"init": cfg.init, "file": cfg.weights_file or ""})
    bundle = BundleManifest(
        name=name,
        version=version,
        architecture=cfg.arch,
        preprocess=cfg.preprocess,
        is_demo=is_demo,
        score_kind="logit_difference",
        operating_points=points,
        cv_aucs=aucs,
        training=summary,
        calibration=calibration,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / TRAINED_ON).write_text(json.dumps(sorted(map(study_hash, trained))) + "\n")
    return save_bundle(
        out,
        holistic=load_file(str(weights_dir / "holistic.safetensors")),
        attention=load_file(str(weights_dir / "attention.safetensors")),
        manifest=bundle,
        storage_dtype=storage_dtype,
    )


def _training_summary(
    manifest: Manifest, cfg: TrainConfig, detail: dict[str, Any]
) -> dict[str, Any]:
    config = {k: v for k, v in cfg.to_dict().items() if k not in {"device", "workers"}}
    return {
        **detail,
        "data": manifest.counts,
        "config": config,
        "trained_on": TRAINED_ON,
    }
