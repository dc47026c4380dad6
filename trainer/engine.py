"""Training and prediction loops shared by both models (holistic and attention).

- Class imbalance: each epoch draws its images with replacement so that
  ``positive_fraction`` of them are positive (weighted sampling), seeded by (seed, epoch) so a
  resumed run sees the same data; the draw is split evenly over the ranks.
- Augmentation (the paper's): random vertical flip, rotation and crop/shift, seeded by
  (seed, epoch, draw number). The sampler hands the epoch to the dataset inside every key, so
  persistent loader workers (which keep the dataset object they were forked with), a resumed
  run and ``workers=0`` all see the same augmentations.
- ``batch_size`` is the global batch; each rank takes ``batch_size / world`` per step
  (``TrainConfig.per_rank_batch``), so the learning rate needs no change under DDP.
- Adam + cosine learning-rate decay per step; bf16 autocast and channels-last on CUDA,
  ``cudnn.benchmark``, pinned host memory and non-blocking copies; DistributedDataParallel
  when launched by torchrun.
- No per-step GPU sync: loss and scores accumulate on the device; the running loss is read
  every ``progress_every`` steps, the epoch's AUC once at its end (over all ranks).
- TensorBoard event files (``torch.utils.tensorboard``) beside the progress bars.
- A checkpoint (model / optimizer / scheduler / epoch / args) after every epoch; a stage
  resumes from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from trainer.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier
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

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        index, draw, epoch = key
        sample = self.samples[index]
        generator = torch.Generator().manual_seed(_seed_of(self.seed, epoch, draw))
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


class BalancedDraw(Sampler[tuple[int, int, int]]):
    """This rank's share of an epoch's weighted draw: (sample index, draw number, epoch)."""

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

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch
        generator = torch.Generator().manual_seed(_seed_of("draw", self.seed, epoch))
        drawn = torch.multinomial(self.weights(), self.total, replacement=True, generator=generator)
        for draw in range(self.info.rank, self.total, self.info.world):
            yield int(drawn[draw]), draw, epoch

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


def loader_options(cfg: TrainConfig, device: torch.device) -> dict[str, object]:
    """DataLoader settings: workers sized to the machine, pinned memory on CUDA."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = cfg.loader_workers(local_world)
    return {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }


@dataclass
class StageSpec:
    name: str  # "holistic" / "attention", for progress and logs
    checkpoint: Path  # stem
    epochs: int
    head_only: bool
    seed: int = 0  # of the weighted draw (per fold and stage)
    log_dir: Path | None = None  # TensorBoard event files (main rank; None: none)


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
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
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
    batch = cfg.per_rank_batch(info.world)
    steps_per_epoch = math.ceil(len(sampler) / batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, spec.epochs * steps_per_epoch), eta_min=cfg.lr * 0.01
    )
    start = 0
    history: list[dict[str, Any]] = []  # per-epoch loss and AUC, kept in the checkpoint JSON
    saved = load_checkpoint(spec.checkpoint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["lr_scheduler"])
        start = saved["epoch"] + 1
        history = list(saved["extra"].get("history", []))
        reporter.log(f"{spec.name}: resuming after epoch {start} from {spec.checkpoint.name}")
    wrapped: nn.Module = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        collate_fn=_collate,
        **loader_options(cfg, device),  # type: ignore[arg-type]
    )
    board = _board(spec, cfg, info)
    loss_fn = nn.CrossEntropyLoss()
    try:
        for epoch in range(start, spec.epochs):
            sampler.epoch = epoch
            _set_train_mode(model, spec.head_only)
            task = reporter.task(f"{spec.name} epoch {epoch + 1}/{spec.epochs}", steps_per_epoch)
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            count = 0
            seen_scores: list[torch.Tensor] = []
            seen_labels: list[torch.Tensor] = []
            for step, (images, labels) in enumerate(loader, start=1):
                images = images.to(device, memory_format=memory, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                with _autocast(device, amp):
                    logits = wrapped(images)
                loss = loss_fn(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach().double() * len(labels)
                count += len(labels)
                seen_scores.append(risk_scores(logits.detach().float()))
                seen_labels.append(labels)
                if step % cfg.progress_every == 0:  # the only sync inside an epoch
                    running = float(loss_sum) / count
                    reporter.advance(task, loss=running)
                    if board is not None:
                        global_step = epoch * steps_per_epoch + step
                        board.add_scalar(f"{spec.name}/loss", running, global_step)
                        board.add_scalar(f"{spec.name}/lr", scheduler.get_last_lr()[0], global_step)
                else:
                    reporter.advance(task)
            total, n = all_reduce_sum(info, [float(loss_sum), float(count)])
            truth, scores = _gather_epoch(info, seen_scores, seen_labels)
            epoch_loss, epoch_auc = total / max(1.0, n), _safe_auc(truth, scores)
            reporter.advance(task, steps=0, loss=epoch_loss, auc=epoch_auc)
            if board is not None:
                board.add_scalar(f"{spec.name}/epoch_loss", epoch_loss, epoch + 1)
                if epoch_auc is not None:
                    board.add_scalar(f"{spec.name}/epoch_auc", epoch_auc, epoch + 1)
                board.flush()
            history.append({"epoch": epoch + 1, "loss": epoch_loss, "auc": epoch_auc})
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
                        "loss": epoch_loss,
                        "auc": epoch_auc,
                        "history": history,
                        "world": info.world,
                        "per_rank_batch": batch,
                        "param_checksums": checksums,
                    },
                )
            barrier(info)
    finally:
        if board is not None:
            board.close()
    model.eval()
    return model


def _board(spec: StageSpec, cfg: TrainConfig, info: DistInfo) -> Any:
    """A TensorBoard writer for the main rank, or None."""
    if not (cfg.tensorboard and info.is_main and spec.log_dir is not None):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(spec.log_dir))


def _gather_epoch(
    info: DistInfo, scores: list[torch.Tensor], labels: list[torch.Tensor]
) -> tuple[list[int], list[float]]:
    """All ranks' epoch scores and labels (one transfer per epoch), as lists."""
    if not scores:
        return [], []
    mine = torch.stack([torch.cat(labels).float(), torch.cat(scores)]).cpu()
    parts = all_gather_objects(info, mine)
    joined = torch.cat(parts, dim=1)
    return [int(v) for v in joined[0].tolist()], joined[1].tolist()


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


def _predict_each(
    sops: Sequence[str],
    tensor_of: Callable[[str], torch.Tensor],
    cfg: TrainConfig,
    info: DistInfo,
    reporter: Reporter,
    label: str,
    batch_fn: Callable[[torch.Tensor, bool], torch.Tensor],
) -> dict[str, list[float]]:
    """Run ``batch_fn(images, amp)`` (-> (B, k) on the device) over this rank's share of
    ``sops``; results stay on the device until the end (one transfer, no per-batch sync)."""
    mine = list(sops)[info.rank :: info.world]
    options = loader_options(cfg, info.device)
    options["persistent_workers"] = False
    loader = DataLoader(
        EvalImages(mine, tensor_of),
        batch_size=max(1, cfg.per_rank_batch(info.world)),
        **options,  # type: ignore[arg-type]
    )
    amp = _amp_on(cfg, info.device)
    parts: list[torch.Tensor] = []
    task = reporter.task(label, len(loader))
    for images in loader:
        parts.append(batch_fn(images.to(info.device, non_blocking=True), amp))
        reporter.advance(task)
    values = torch.cat(parts).cpu().tolist() if parts else []
    return dict(zip(mine, values, strict=True))


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

    def batch(images: torch.Tensor, amp: bool) -> torch.Tensor:
        result = input_saliency(
            model,
            images,
            autocast_dtype=torch.bfloat16 if amp else None,
            channels_last=info.device.type == "cuda",
            smoothing=cfg.saliency_smoothing,
            coa_rule=cfg.coa_rule,
        )
        return torch.cat([result.scores[:, None], result.coa.float()], dim=1).detach()

    found = _predict_each(sops, tensor_of, cfg, info, reporter, label, batch)
    return {sop: SaliencyOut(v[0], (v[1], v[2])) for sop, v in found.items()}


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

    def batch(images: torch.Tensor, amp: bool) -> torch.Tensor:
        scores = forward_scores(
            model,
            images,
            autocast_dtype=torch.bfloat16 if amp else None,
            channels_last=info.device.type == "cuda",
        )
        return scores[:, None]

    found = _predict_each(sops, tensor_of, cfg, info, reporter, label, batch)
    return {sop: v[0] for sop, v in found.items()}


def roi_tensor(crop: torch.Tensor, settings: PreprocessSettings) -> torch.Tensor:
    return normalise(crop, settings)
