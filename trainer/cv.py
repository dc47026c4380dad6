"""k-fold cross-validation of the paper's pipeline, resumable stage by stage.

RUN_DIR/
  run.json                 settings + manifest path (a resumed run must match)
  folds.json               study_uid -> fold
  cache/                   prepared images at the holistic width (see trainer.cache)
  tensorboard/             TensorBoard event files per fold and stage
  fold_XX/holistic.*       checkpoint while training, holistic.safetensors when done
  fold_XX/rois.json        holistic score + COA + ROI for every image (train and test)
  fold_XX/roi_cache/       the attention model's 16-bit ROI crops (removed after the fold)
  fold_XX/attention.*      the same for the attention model
  fold_XX/scores.csv       held-out image scores: holistic, attention, ensemble, COA, ROI
  cv_scores.csv            all folds' held-out image scores (what ``report`` reads)

Per fold: train Holistic on the other folds' images (paper labels, weighted draw, augmentation)
-> saliency COAs and ROIs for train and test images -> train Attention initialised from the
Holistic weights on the ROIs -> score the held-out fold.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mammo_node.ml.models import build_model, freeze_backbone
from mammo_node.ml.preprocess import eval_tensor
from mammo_node.ml.roi import roi_origin, stored_box
from mammo_node.ml.scoring import ensemble_score
from trainer.cache import ImageCache, RoiCache
from trainer.config import TrainConfig
from trainer.data import ExamRecord, Manifest, image_label
from trainer.distributed import DistInfo, barrier, init_distributed, shutdown
from trainer.engine import (
    SaliencyOut,
    Sample,
    StageSpec,
    TrainImages,
    loader_options,
    predict_saliency,
    predict_scores,
    roi_tensor,
    train_stage,
)
from trainer.errors import RunError
from trainer.fold_check import fold_summary
from trainer.folds import assign_folds
from trainer.pretrained import InitWeights, resolve_init
from trainer.progress import Reporter
from trainer.report import read_cv_scores

logger = logging.getLogger(__name__)

SCORE_COLUMNS = (
    "fold",
    "study_uid",
    "sop_instance_uid",
    "slot",
    "label",
    "holistic",
    "attention",
    "ensemble",
    "coa_x",
    "coa_y",
    "roi_x0",
    "roi_y0",
    "roi_x1",
    "roi_y1",
)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def open_run(
    run_dir: Path, manifest_path: Path, cfg: TrainConfig, info: DistInfo, init: InitWeights
) -> None:
    """Create run.json, or check that an existing run was made with the same settings."""
    run_file = run_dir / "run.json"
    if info.is_main and not run_file.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(
            run_file,
            {
                "config": cfg.to_dict(),
                "manifest": str(manifest_path.resolve()),
                "init": init.to_dict(),
            },
        )
    barrier(info)
    data = json.loads(run_file.read_text())
    diff = TrainConfig.from_dict(data["config"]).differences(cfg)
    if diff:
        raise RunError(
            f'Run "{run_dir}" was started with other settings {diff} (before, now); '
            "use a new --out directory or the same settings."
        )
    if Path(data["manifest"]) != manifest_path.resolve():
        raise RunError(f'Run "{run_dir}" was made from {data["manifest"]}, not {manifest_path}.')


@dataclass
class Fold:
    index: int
    directory: Path
    train: list[ExamRecord]
    test: list[ExamRecord]

    def samples(self, exams: Sequence[ExamRecord]) -> list[Sample]:
        return [
            Sample(i.sop_instance_uid, image_label(e, s))
            for e in exams
            for s, i in sorted(e.images.items())
        ]


class CrossValidation:
    def __init__(
        self,
        manifest_path: Path,
        run_dir: Path,
        cfg: TrainConfig,
        reporter: Reporter,
        info: DistInfo,
    ) -> None:
        self.manifest_path, self.run_dir, self.cfg = manifest_path, run_dir, cfg
        self.reporter, self.info = reporter, info
        self.manifest = Manifest.load(manifest_path)
        self.cache = ImageCache(run_dir / "cache", cfg.preprocess)
        self.init = resolve_init(cfg.init, cfg.arch, cfg.weights_file)
        self.workers = loader_options(cfg, info.device)["num_workers"]

    # --- setup --------------------------------------------------------------------------
    def usable_exams(self) -> list[ExamRecord]:
        bad = set(self.cache.failed)
        exams = [
            e
            for e in self.manifest.exams
            if not any(i.sop_instance_uid in bad for i in e.images.values())
        ]
        if len(exams) < len(self.manifest.exams):
            self.reporter.log(
                f"{len(self.manifest.exams) - len(exams)} exam(s) left out: an "
                "image could not be decoded (see the log)."
            )
        return exams

    def folds(self, exams: list[ExamRecord]) -> list[Fold]:
        path = self.run_dir / "folds.json"
        if path.is_file():
            assignment = json.loads(path.read_text())
        else:
            assignment = assign_folds(exams, folds=self.cfg.folds, seed=self.cfg.seed)
            if self.info.is_main:
                _write_json(path, assignment)
        barrier(self.info)
        return [
            Fold(
                k,
                self.run_dir / f"fold_{k:02d}",
                [e for e in exams if assignment[e.study_uid] != k],
                [e for e in exams if assignment[e.study_uid] == k],
            )
            for k in range(self.cfg.folds)
        ]

    # --- stages -------------------------------------------------------------------------
    def new_model(self, fold: Fold, *, start: bool = True) -> nn.Module:
        """A fold's model: from the run's starting weights (``start``) or to be loaded."""
        torch.manual_seed(self.cfg.seed * 1000 + fold.index)
        weights = self.init.path if start else None
        model = build_model(arch=self.cfg.arch, weights=weights)
        if self.cfg.train_head_only:
            freeze_backbone(model)
        return model

    def holistic(self, fold: Fold) -> nn.Module:
        final = fold.directory / "holistic.safetensors"
        model = self.new_model(fold, start=not final.is_file())
        if not final.is_file():
            dataset = TrainImages(
                fold.samples(fold.train),
                self.cache.scaled,
                size=self.cfg.input_size,
                settings=self.cfg.preprocess,
                augmentation=self.cfg.augmentation,
                seed=self.cfg.seed,
            )
            spec = StageSpec(
                "holistic",
                fold.directory / "holistic.checkpoint",
                self.cfg.stage_epochs["holistic"],
                self.cfg.train_head_only,
                seed=self.cfg.seed * 1000 + fold.index,
                log_dir=self.run_dir / "tensorboard" / fold.directory.name / "holistic",
            )
            train_stage(model, dataset, spec, self.cfg, self.info, self.reporter)
            self._finish_stage(model, final, spec)
        model.load_state_dict(load_file(str(final)))
        return model.eval()

    def _finish_stage(self, model: nn.Module, final: Path, spec: StageSpec) -> None:
        """Write the stage's weights; drop the resume tensors (the JSON stays as a record)."""
        if self.info.is_main:
            save_file({k: v.cpu().contiguous() for k, v in model.state_dict().items()}, str(final))
            spec.checkpoint.with_name(f"{spec.checkpoint.name}.safetensors").unlink(missing_ok=True)
        barrier(self.info)

    def rois(self, fold: Fold, holistic: nn.Module) -> dict[str, dict[str, Any]]:
        """Holistic score, COA and ROI window for every image of the fold (train and test)."""
        path = fold.directory / "rois.json"
        if not path.is_file():
            sops = [s.sop for s in fold.samples(fold.train + fold.test)]
            settings = self.cfg.preprocess
            found = predict_saliency(
                holistic,
                sops,
                lambda s: eval_tensor(self.cache.scaled(s), settings),
                self.cfg,
                self.info,
                self.reporter,
                f"fold {fold.index}: saliency ROIs",
            )
            part = fold.directory / f"rois.rank{self.info.rank}.json"
            _write_json(part, {s: self._roi_entry(s, o) for s, o in found.items()})
            barrier(self.info)
            if self.info.is_main:
                merged: dict[str, Any] = {}
                for r in range(self.info.world):
                    merged.update(json.loads((fold.directory / f"rois.rank{r}.json").read_text()))
                _write_json(path, merged)
            barrier(self.info)
        return json.loads(path.read_text())

    def _roi_entry(self, sop: str, out: SaliencyOut) -> dict[str, Any]:
        geometry = self.cache.geometries[sop]
        coa_stored = geometry.to_stored(*out.coa)
        origin = roi_origin(geometry, coa_stored, self.cfg.roi_size)
        return {
            "holistic": out.score,
            "coa_model": list(out.coa),
            "coa_stored": list(coa_stored),
            "origin": list(origin),
            "box": list(stored_box(geometry, origin, self.cfg.roi_size)),
        }

    def roi_cache(self, fold: Fold, rois: dict[str, dict[str, Any]]) -> RoiCache:
        """The fold's ROI crops (cut once from the hires images; resumable)."""
        cache = RoiCache(fold.directory / "roi_cache", self.cfg.roi_size)
        images = [i for e in fold.train + fold.test for _, i in sorted(e.images.items())]
        origins = {sop: tuple(entry["origin"]) for sop, entry in rois.items()}
        cache.build(
            self.manifest,
            images,
            origins,  # type: ignore[arg-type]
            self.cfg.preprocess,
            self.info,
            self.reporter,
            workers=self.workers,
        )
        return cache

    def attention(self, fold: Fold, crops: RoiCache) -> nn.Module:
        final = fold.directory / "attention.safetensors"
        model = self.new_model(fold, start=False)
        if not final.is_file():
            model.load_state_dict(load_file(str(fold.directory / "holistic.safetensors")))
            dataset = TrainImages(
                fold.samples(fold.train),
                crops.crop,
                size=self.cfg.roi_size,
                settings=self.cfg.preprocess,
                augmentation=self.cfg.augmentation,
                seed=self.cfg.seed + 1,
            )
            spec = StageSpec(
                "attention",
                fold.directory / "attention.checkpoint",
                self.cfg.stage_epochs["attention"],
                self.cfg.train_head_only,
                seed=self.cfg.seed * 1000 + fold.index + 500,
                log_dir=self.run_dir / "tensorboard" / fold.directory.name / "attention",
            )
            train_stage(model, dataset, spec, self.cfg, self.info, self.reporter)
            self._finish_stage(model, final, spec)
        model.load_state_dict(load_file(str(final)))
        return model.eval()

    def score(
        self, fold: Fold, attention: nn.Module, rois: dict[str, dict[str, Any]], crops: RoiCache
    ) -> None:
        path = fold.directory / "scores.csv"
        samples = fold.samples(fold.test)
        settings = self.cfg.preprocess
        found = predict_scores(
            attention,
            [s.sop for s in samples],
            lambda s: roi_tensor(torch.from_numpy(crops.crop(s)), settings),
            self.cfg,
            self.info,
            self.reporter,
            f"fold {fold.index}: attention scores",
        )
        part = fold.directory / f"attention.rank{self.info.rank}.json"
        _write_json(part, found)
        barrier(self.info)
        if self.info.is_main:
            scores: dict[str, float] = {}
            for r in range(self.info.world):
                scores.update(json.loads((fold.directory / f"attention.rank{r}.json").read_text()))
            rows = []
            for exam in fold.test:
                for slot, image in sorted(exam.images.items()):
                    roi = rois[image.sop_instance_uid]
                    h, a = roi["holistic"], scores[image.sop_instance_uid]
                    rows.append(
                        [
                            fold.index,
                            exam.study_uid,
                            image.sop_instance_uid,
                            str(slot),
                            image_label(exam, slot),
                            h,
                            a,
                            ensemble_score(h, a),
                            *roi["coa_stored"],
                            *roi["box"],
                        ]
                    )
            write_scores(path, rows)
        barrier(self.info)

    # --- driver -------------------------------------------------------------------------
    def run(self) -> Path:
        self.cache.build(self.manifest, self.info, self.reporter, workers=self.workers)
        exams = self.usable_exams()
        folds = self.folds(exams)
        timings: dict[str, float] = {}
        for fold in folds:
            fold.directory.mkdir(parents=True, exist_ok=True)
            if (fold.directory / "scores.csv").is_file():
                continue
            t0 = time.perf_counter()
            holistic = self.holistic(fold)
            rois = self.rois(fold, holistic)
            crops = self.roi_cache(fold, rois)
            attention = self.attention(fold, crops)
            self.score(fold, attention, rois, crops)
            crops.remove(self.info)
            timings[f"fold_{fold.index:02d}"] = time.perf_counter() - t0
            self.reporter.log(
                f"fold {fold.index}: done in {timings[f'fold_{fold.index:02d}']:.0f} s"
            )
        out = self.run_dir / "cv_scores.csv"
        if self.info.is_main:
            rows: list[list[Any]] = []
            for fold in folds:
                with (fold.directory / "scores.csv").open(newline="") as fh:
                    rows += [list(r.values()) for r in csv.DictReader(fh)]
            write_scores(out, rows)
            _write_json(self.run_dir / "timings.json", timings)
            for lagging in fold_summary(self.run_dir, read_cv_scores(out))["flagged"]:
                self.reporter.log(f"warning: {lagging['reason']}.")
        barrier(self.info)
        return out


def write_scores(path: Path, rows: list[list[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SCORE_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)


def run_cv(manifest_path: Path, run_dir: Path, cfg: TrainConfig, *, quiet: bool = False) -> Path:
    """Run (or resume) the cross-validation; returns the path of cv_scores.csv."""
    info = init_distributed(cfg.device)
    try:
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        open_run(
            run_dir, manifest_path, cfg, info, resolve_init(cfg.init, cfg.arch, cfg.weights_file)
        )
        with Reporter(enabled=info.is_main and not quiet) as reporter:
            return CrossValidation(manifest_path, run_dir, cfg, reporter, info).run()
    finally:
        shutdown(info)
