"""A training run's settings: the paper's defaults, every size a setting (CPU runs use small)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mammo_node.ml.models import ARCHITECTURES
from mammo_node.ml.preprocess import Augmentation, PreprocessSettings
from trainer.errors import RunError

# Settings that do not change results: a resumed run may differ in these.
RUNTIME_ONLY = frozenset({"device", "workers"})


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "resnet101"
    input_size: int = 976
    roi_size: int = 976
    roi_scale: float = 2.0
    saliency_smoothing: float = 0.0  # Gaussian sigma before the COA; 0 = the paper's raw map
    epochs: int = 10
    attention_epochs: int | None = None  # None: same as epochs
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    positive_fraction: float = 0.5  # share of positive images drawn per epoch (imbalance)
    max_rotation: float = 10.0
    folds: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    amp: bool | None = None  # None: on for CUDA, off on CPU
    init_weights: str | None = None
    train_head_only: bool = False
    deterministic: bool = False

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
        if self.workers < 0:
            raise RunError(f'Argument "workers" should be >= 0, got {self.workers}.')
        self.preprocess  # noqa: B018 - validates the sizes with their own messages

    @property
    def preprocess(self) -> PreprocessSettings:
        try:
            return PreprocessSettings(
                input_size=self.input_size,
                roi_size=self.roi_size,
                roi_scale=self.roi_scale,
                saliency_smoothing=self.saliency_smoothing,
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
        """The paper's "Adapted Pretrained" setting: outside weights and/or head-only."""
        return self.init_weights is not None or self.train_head_only

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
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
