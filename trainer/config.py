"""A training run's settings: the paper's defaults, every size a setting (CPU runs use small)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from mammo_node.ml.models import ARCHITECTURES
from mammo_node.ml.preprocess import Augmentation, PreprocessSettings
from trainer.errors import RunError
from trainer.pretrained import INITS

# Settings that do not change results: a resumed run may differ in these.
RUNTIME_ONLY = frozenset({"device", "workers", "progress_every", "tensorboard"})


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "resnet101"
    input_size: int = 976
    roi_size: int = 976
    roi_scale: float = 2.0
    saliency_smoothing: float = 0.0  # Gaussian sigma before the COA; 0 = the paper's raw map
    coa_rule: str = "breast_region"  # or "paper" (mammo_node.ml.saliency.COA_RULES)
    epochs: int = 10
    attention_epochs: int | None = None  # None: same as epochs
    batch_size: int = 4  # global (all ranks together), the paper's; see per_rank_batch
    lr: float = 1e-4
    weight_decay: float = 1e-5
    positive_fraction: float = 0.5  # share of positive images drawn per epoch (imbalance)
    max_rotation: float = 10.0
    folds: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # data-loader processes per rank; None: sized to the machine
    amp: bool | None = None  # None: on for CUDA, off on CPU
    init: str = "imagenet"  # the paper's start; "scratch" = random weights
    weights_file: str | None = None  # None: torchvision's file in torch hub's cache
    train_head_only: bool = False  # the paper's "Adapted Pretrained": fc only
    deterministic: bool = False
    progress_every: int = 50  # steps between running-loss updates (one GPU sync each)
    tensorboard: bool = True  # event files under RUN_DIR/tensorboard

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise RunError(
                f'Argument "arch" should be one of {sorted(ARCHITECTURES)}, got {self.arch!r}.'
            )
        for name in ("epochs", "batch_size", "folds"):
            if getattr(self, name) < 1:
                raise RunError(f'Argument "{name}" should be >= 1, got {getattr(self, name)}.')
        if self.attention_epochs is not None and self.attention_epochs < 0:
            raise RunError(
                f'Argument "attention_epochs" should be >= 0, got {self.attention_epochs}.'
            )
        if not 0.0 < self.positive_fraction < 1.0:
            raise RunError(
                f'Argument "positive_fraction" should be in (0, 1), got {self.positive_fraction}.'
            )
        if self.lr <= 0:
            raise RunError(f'Argument "lr" should be > 0, got {self.lr}.')
        if self.workers is not None and self.workers < 0:
            raise RunError(f'Argument "workers" should be >= 0, got {self.workers}.')
        if self.init not in INITS:
            raise RunError(f'Argument "init" should be one of {INITS}, got {self.init!r}.')
        if self.init == "scratch" and self.weights_file:
            raise RunError('"--weights-file" needs "--init imagenet", not "--init scratch".')
        if self.progress_every < 1:
            raise RunError(f'Argument "progress_every" should be >= 1, got {self.progress_every}.')
        self.preprocess  # noqa: B018 - validates the sizes with their own messages

    @property
    def preprocess(self) -> PreprocessSettings:
        try:
            return PreprocessSettings(
                input_size=self.input_size,
                roi_size=self.roi_size,
                roi_scale=self.roi_scale,
                saliency_smoothing=self.saliency_smoothing,
                coa_rule=self.coa_rule,
            )
        except (TypeError, ValueError) as exc:
            raise RunError(str(exc)) from exc

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(max_rotation=self.max_rotation)

    @property
    def stage_epochs(self) -> dict[str, int]:
        attention = self.epochs if self.attention_epochs is None else self.attention_epochs
        return {"holistic": self.epochs, "attention": attention}

    @property
    def adapted(self) -> bool:
        """The paper's "Adapted Pretrained" setting: only the head is trained. Where the
        weights come from (``init``) is a separate setting: an ImageNet start is the paper's
        default recipe, not "adapted"."""
        return self.train_head_only

    def per_rank_batch(self, world: int) -> int:
        """``batch_size`` is global: each of ``world`` ranks takes an equal share, so a run
        on 1 or N GPUs takes the same optimiser steps with the same learning rate. To train
        with a larger global batch, raise ``lr`` with it (the linear rule of Goyal et al.);
        nothing is scaled automatically."""
        if self.batch_size % world:
            raise RunError(
                f"The global batch size {self.batch_size} cannot be split evenly over {world} "
                f"processes; use a multiple of {world}."
            )
        return self.batch_size // world

    def loader_workers(self, local_world: int = 1) -> int:
        """``workers``, or (None) the CPUs shared by this machine's ranks, at most 8 each."""
        if self.workers is not None:
            return self.workers
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(0, min(8, (cpus or 1) // max(1, local_world) - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "init_weights" in data:  # runs made before init and head-only were separate
            legacy = data.pop("init_weights")
            data.setdefault("init", "imagenet" if legacy else "scratch")
            data.setdefault("weights_file", legacy)
        data.setdefault("coa_rule", "paper")  # runs made before the rule was a setting
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunError(f"Unknown run setting(s) {unknown}.")
        return cls(**data)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Result-changing settings that differ (for resume)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {
            k: (mine[k], theirs[k]) for k in mine if k not in RUNTIME_ONLY and mine[k] != theirs[k]
        }
