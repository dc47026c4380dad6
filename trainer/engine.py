"""Training and prediction loops shared by both models (holistic and attention).

- Class imbalance: each epoch draws its images with replacement so that
  ``positive_fraction`` of them are positive (weighted sampling), seeded by (seed, epoch) so a
  resumed run sees the same data; the draw is split evenly over the ranks.
- Augmentation (the paper's): random vertical flip, rotation and crop/shift, seeded per
  (seed, epoch, draw) so workers and resumes are reproducible.
- Adam + cosine learning-rate decay per step; bf16 autocast when AMP is on; channels-last on
  CUDA; DistributedDataParallel when launched by torchrun.
- A checkpoint (model / optimizer / scheduler / epoch / args) after every epoch; a stage
  resumes from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from mammo_node.ml.preprocess import Augmentation, PreprocessSettings, normalise, train_tensor
from mammo_node.ml.saliency import forward_scores, input_saliency, risk_scores
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.distributed import DistInfo, all_reduce_sum, barrier
from trainer.progress import Reporter

logger = logging.getLogger(__name__)


def _seed_of(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:7], "big")


def crop_hires(hires: np.ndarray, origin: tuple[int, int], size: int) -> torch.Tensor:
    """A size x size window of a (memory-mapped) hires image at origin (x, y), zero outside."""
    x0, y0 = origin
    out = np.zeros((size, size), dtype=np.float32)
    ys, ye = max(0, y0), min(hires.shape[0], y0 + size)
    xs, xe = max(0, x0), min(hires.shape[1], x0 + size)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = hires[ys:ye, xs:xe]
    return torch.from_numpy(out)


# --- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    sop: str
    label: int


ImageSource = Callable[[str], np.ndarray]  # sop -> oriented 0..1 image (scaled or ROI crop)


class TrainImages(Dataset[tuple[torch.Tensor, int]]):
    """Random training inputs: ``image_of(sop)`` then the paper's augmentation."""

    def __init__(
        self,
        samples: Sequence[Sample],
        image_of: ImageSource,
        *,
        size: int,
        settings: PreprocessSettings,
        augmentation: Augmentation,
        seed: int,
    ) -> None:
        self.samples, self.image_of, self.size = list(samples), image_of, size
        self.settings, self.augmentation, self.seed = settings, augmentation, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        index, draw = key
        sample = self.samples[index]
        generator = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, draw))
        image = np.asarray(self.image_of(sample.sop), dtype=np.float32)
        tensor = train_tensor(
            image,
            size=self.size,
            settings=self.settings,
            augmentation=self.augmentation,
            generator=generator,
        )
        return tensor, sample.label


class EvalImages(Dataset[torch.Tensor]):
    def __init__(self, sops: Sequence[str], tensor_of: Callable[[str], torch.Tensor]) -> None:
        self.sops, self.tensor_of = list(sops), tensor_of

    def __len__(self) -> int:
        return len(self.sops)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tensor_of(self.sops[index])


class BalancedDraw(Sampler[tuple[int, int]]):
    """This rank's share of an epoch's weighted draw: (sample index, draw number) pairs."""

    def __init__(
        self, labels: Sequence[int], *, positive_fraction: float, seed: int, info: DistInfo
    ) -> None:
        self.labels = torch.tensor(list(labels), dtype=torch.long)
        self.positive_fraction, self.seed, self.info = positive_fraction, seed, info
        self.epoch = 0
        per_rank = math.ceil(len(self.labels) / info.world)
        self.total = per_rank * info.world

    def weights(self) -> torch.Tensor:
        n_pos = int(self.labels.sum())
        n_neg = len(self.labels) - n_pos
        if n_pos == 0 or n_neg == 0:
            return torch.ones(len(self.labels), dtype=torch.double)
        f = self.positive_fraction
        return torch.where(self.labels == 1, f / n_pos, (1 - f) / n_neg).double()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(_seed_of("draw", self.seed, self.epoch))
        drawn = torch.multinomial(self.weights(), self.total, replacement=True, generator=generator)
        for draw in range(self.info.rank, self.total, self.info.world):
            yield int(drawn[draw]), draw

    def __len__(self) -> int:
        return self.total // self.info.world


# --- training -------------------------------------------------------------------------------


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[None]:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _safe_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def _collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


@dataclass
class StageSpec:
    name: str  # "holistic" / "attention", for progress and logs
    checkpoint: Path  # stem
    epochs: int
    head_only: bool
    seed: int = 0  # of the weighted draw (per fold and stage)


def train_stage(
    model: nn.Module,
    dataset: TrainImages,
    spec: StageSpec,
    cfg: TrainConfig,
    info: DistInfo,
    reporter: Reporter,
) -> nn.Module:
    """Train ``model`` in place (resuming from the stage's checkpoint) and return it."""
    device, amp = info.device, _amp_on(cfg, info.device)
    memory = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(device, memory_format=memory)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = BalancedDraw(
        [s.label for s in dataset.samples],
        positive_fraction=cfg.positive_fraction,
        seed=spec.seed,
        info=info,
    )
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, spec.epochs * steps_per_epoch), eta_min=cfg.lr * 0.01
    )
    start = 0
    saved = load_checkpoint(spec.checkpoint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["lr_scheduler"])
        start = saved["epoch"] + 1
        reporter.log(f"{spec.name}: resuming after epoch {start} from {spec.checkpoint.name}")
    wrapped: nn.Module = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=_collate,
        persistent_workers=cfg.workers > 0,
    )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, spec.epochs):
        sampler.epoch = dataset.epoch = epoch
        _set_train_mode(model, spec.head_only)
        task = reporter.task(f"{spec.name} epoch {epoch + 1}/{spec.epochs}", steps_per_epoch)
        total, count, seen_labels, seen_scores = 0.0, 0, [], []
        for images, labels in loader:
            images = images.to(device, memory_format=memory, non_blocking=True)
            labels = labels.to(device)
            with _autocast(device, amp):
                logits = wrapped(images)
            loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(labels)
            count += len(labels)
            seen_labels += labels.tolist()
            seen_scores += risk_scores(logits.detach().float()).tolist()
            reporter.advance(task, loss=total / count, auc=_safe_auc(seen_labels, seen_scores))
        total, count = all_reduce_sum(info, [total, float(count)])
        checksums = _rank_checksums(model, info)
        if info.is_main:
            save_checkpoint(
                spec.checkpoint,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                epoch=epoch,
                args=cfg.to_dict(),
                extra={
                    "stage": spec.name,
                    "loss": total / max(1.0, count),
                    "world": info.world,
                    "param_checksums": checksums,
                },
            )
        barrier(info)
    model.eval()
    return model


def _rank_checksums(model: nn.Module, info: DistInfo) -> list[float]:
    """Every rank's sum of its trainable parameters: equal when DDP keeps replicas in sync."""
    mine = float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))
    values = [0.0] * info.world
    values[info.rank] = mine
    return all_reduce_sum(info, values)


def _set_train_mode(model: nn.Module, head_only: bool) -> None:
    model.train()
    if head_only:  # a frozen backbone keeps its batch-norm statistics too
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _amp_on(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.amp if cfg.amp is not None else device.type == "cuda"


# --- prediction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SaliencyOut:
    score: float
    coa: tuple[float, float]  # model input coordinates


T = TypeVar("T")


def _predict_each(
    sops: Sequence[str],
    tensor_of: Callable[[str], torch.Tensor],
    cfg: TrainConfig,
    info: DistInfo,
    reporter: Reporter,
    label: str,
    batch_fn: Callable[[torch.Tensor, bool], list[T]],
) -> dict[str, T]:
    """Run ``batch_fn(images, amp)`` over this rank's share of ``sops``; one value per SOP."""
    mine = list(sops)[info.rank :: info.world]
    loader = DataLoader(
        EvalImages(mine, tensor_of), batch_size=cfg.batch_size, num_workers=cfg.workers
    )
    amp = _amp_on(cfg, info.device)
    out: dict[str, T] = {}
    task = reporter.task(label, len(loader))
    for images in loader:
        for value in batch_fn(images.to(info.device), amp):
            out[mine[len(out)]] = value
        reporter.advance(task)
    return out


def predict_saliency(
    model: nn.Module,
    sops: Sequence[str],
    tensor_of: Callable[[str], torch.Tensor],
    cfg: TrainConfig,
    info: DistInfo,
    reporter: Reporter,
    label: str,
) -> dict[str, SaliencyOut]:
    """Holistic scores and COAs for this rank's share of ``sops``."""
    model.to(info.device).eval()

    def batch(images: torch.Tensor, amp: bool) -> list[SaliencyOut]:
        result = input_saliency(
            model,
            images,
            autocast_dtype=torch.bfloat16 if amp else None,
            channels_last=info.device.type == "cuda",
            smoothing=cfg.saliency_smoothing,
        )
        return [
            SaliencyOut(float(result.scores[i]), (float(result.coa[i, 0]), float(result.coa[i, 1])))
            for i in range(len(images))
        ]

    return _predict_each(sops, tensor_of, cfg, info, reporter, label, batch)


def predict_scores(
    model: nn.Module,
    sops: Sequence[str],
    tensor_of: Callable[[str], torch.Tensor],
    cfg: TrainConfig,
    info: DistInfo,
    reporter: Reporter,
    label: str,
) -> dict[str, float]:
    """Risk scores (no gradient) for this rank's share of ``sops``."""
    model.to(info.device).eval()

    def batch(images: torch.Tensor, amp: bool) -> list[float]:
        scores = forward_scores(
            model,
            images,
            autocast_dtype=torch.bfloat16 if amp else None,
            channels_last=info.device.type == "cuda",
        )
        return [float(score) for score in scores.tolist()]

    return _predict_each(sops, tensor_of, cfg, info, reporter, label, batch)


def roi_tensor(crop: torch.Tensor, settings: PreprocessSettings) -> torch.Tensor:
    return normalise(crop, settings)
