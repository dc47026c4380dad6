"""Training loop: weighted draw, checkpoints without pickle, resume gives the same model."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mammo_node.ml.models import build_model
from tests.helpers.mg import breast_phantom, plant_spot
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.distributed import DistInfo
from trainer.engine import BalancedDraw, Sample, StageSpec, TrainImages, train_stage
from trainer.errors import RunError
from trainer.progress import Reporter

pytestmark = pytest.mark.usefixtures("single_thread")

SINGLE = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
CFG = TrainConfig(
    arch="resnet18",
    input_size=32,
    roi_size=16,
    epochs=2,
    batch_size=4,
    lr=1e-3,
    workers=0,
    device="cpu",
)


def images() -> dict[str, np.ndarray]:
    out = {}
    for i in range(12):
        image = breast_phantom(40, 32, seed=i)
        if i % 3 == 0:
            plant_spot(image, 12.5, 20.5, radius=3.0)
        out[f"s{i}"] = image
    return out


def dataset(kind: type[TrainImages] = TrainImages) -> TrainImages:
    pixels = images()
    samples = [Sample(k, int(i % 3 == 0)) for i, k in enumerate(pixels)]
    return kind(
        samples,
        pixels.__getitem__,
        size=32,
        settings=CFG.preprocess,
        augmentation=CFG.augmentation,
        seed=0,
    )


def test_weighted_draw_balances_classes_and_splits_over_ranks() -> None:
    labels = [1] * 10 + [0] * 90
    draw = BalancedDraw(labels, positive_fraction=0.5, seed=0, info=SINGLE)
    drawn = [labels[i] for i, _, _ in draw]
    assert len(drawn) == 100 and 35 <= sum(drawn) <= 65
    ranks = [
        BalancedDraw(
            labels, positive_fraction=0.5, seed=0, info=DistInfo(r, 3, r, torch.device("cpu"))
        )
        for r in range(3)
    ]
    shares = [list(r) for r in ranks]
    assert [len(s) for s in shares] == [34, 34, 34]  # padded to equal shares
    numbers = Counter(d for share in shares for _, d, _ in share)
    assert sorted(numbers) == list(range(102)) and set(numbers.values()) == {1}


def test_checkpoint_round_trip_without_pickle(tmp_path: Path) -> None:
    model = build_model(arch="resnet18")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    optimizer.step()
    scheduler.step()
    save_checkpoint(
        tmp_path / "c",
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        epoch=3,
        args={"arch": "resnet18"},
    )
    loaded = load_checkpoint(tmp_path / "c")
    assert loaded is not None and loaded["epoch"] == 3 and loaded["args"] == {"arch": "resnet18"}
    fresh = torch.optim.Adam(build_model(arch="resnet18").parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert torch.equal(a["state"][0]["exp_avg"], b["state"][0]["exp_avg"])
    assert float(a["state"][0]["step"]) == float(b["state"][0]["step"])
    assert loaded["lr_scheduler"]["last_epoch"] == 1
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}


class Crash(Exception):
    """The process dies in the middle of an epoch."""


class CrashInSecondEpoch(Reporter):
    """Kills the run after the first optimiser step of epoch 2 (its checkpoint not written)."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.epoch = 0

    def task(self, description: str, total: int) -> int | None:
        self.epoch += "epoch" in description
        return 1

    def advance(self, task: int | None, steps: int = 1, **stats: float | str | None) -> None:
        if self.epoch == 2 and steps:
            raise Crash


def _train(model: torch.nn.Module, directory: Path, cfg: TrainConfig, reporter: Reporter) -> None:
    spec = StageSpec("holistic", directory / "ck", 2, False, log_dir=directory / "tb")
    train_stage(model, dataset(), spec, cfg, SINGLE, reporter)


def test_resume_and_loader_workers_give_the_uninterrupted_run(tmp_path: Path) -> None:
    """workers=0, two persistent workers, and a run killed mid-epoch then resumed (with
    workers) end with the same weights: augmentation follows (epoch, draw), not the
    process that happens to run it."""
    torch.manual_seed(0)
    start = build_model(arch="resnet18").state_dict()
    with_workers = dataclasses.replace(CFG, workers=2)

    def fresh() -> torch.nn.Module:
        model = build_model(arch="resnet18")
        model.load_state_dict(start)
        return model

    straight = fresh()
    _train(straight, tmp_path / "a", CFG, Reporter(enabled=False))
    workers = fresh()
    _train(workers, tmp_path / "b", with_workers, Reporter(enabled=False))
    with pytest.raises(Crash):
        _train(fresh(), tmp_path / "c", with_workers, CrashInSecondEpoch())
    saved = load_checkpoint(tmp_path / "c" / "ck")
    assert saved is not None and saved["epoch"] == 0
    resumed = fresh()  # a new process starts from fresh weights
    _train(resumed, tmp_path / "c", with_workers, Reporter(enabled=False))
    for other in (workers, resumed):
        for (k, a), b in zip(
            straight.state_dict().items(), other.state_dict().values(), strict=True
        ):
            assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    assert not torch.equal(straight.fc.weight, start["fc.weight"])
    meta = load_checkpoint(tmp_path / "a" / "ck")
    assert meta is not None and meta["extra"]["auc"] is not None  # the epoch's AUC, once
    # the per-epoch record survives the crash: the resumed run's history is the straight one's
    again = load_checkpoint(tmp_path / "c" / "ck")
    assert again is not None
    straight_history = meta["extra"]["history"]
    assert [h["epoch"] for h in straight_history] == [1, 2]
    assert straight_history[-1]["loss"] == meta["extra"]["loss"]
    assert [h["epoch"] for h in again["extra"]["history"]] == [1, 2]
    for a, b in zip(straight_history, again["extra"]["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert list((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))


def test_each_epoch_augments_differently_even_in_persistent_workers() -> None:
    data = dataset()
    sampler = BalancedDraw(
        [s.label for s in data.samples], positive_fraction=0.5, seed=0, info=SINGLE
    )
    first = next(iter(sampler))
    sampler.epoch = 1
    index, draw, epoch = next(iter(sampler))
    assert epoch == 1
    # the same image and draw number in another epoch gets another augmentation
    a, _ = data[(index, draw, 0)]
    b, _ = data[(index, draw, 1)]
    assert not torch.equal(a, b)
    assert torch.equal(data[first][0], data[first][0])


def test_global_batch_is_split_over_ranks() -> None:
    cfg = TrainConfig(batch_size=4)
    assert (cfg.per_rank_batch(1), cfg.per_rank_batch(2), cfg.per_rank_batch(4)) == (4, 2, 1)
    with pytest.raises(RunError, match="cannot be split evenly over 3"):
        cfg.per_rank_batch(3)


def test_head_only_training_changes_nothing_but_the_head(tmp_path: Path) -> None:
    from mammo_node.ml.models import freeze_backbone

    model = build_model(arch="resnet18")
    freeze_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_stage(
        model,
        dataset(),
        StageSpec("holistic", tmp_path / "ck", 1, True),
        CFG,
        SINGLE,
        Reporter(enabled=False),
    )
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}
