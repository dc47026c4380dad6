"""Training loop: weighted draw, checkpoints without pickle, resume gives the same model."""

from __future__ import annotations

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
from trainer.progress import Reporter

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
    drawn = [labels[i] for i, _ in draw]
    assert len(drawn) == 100 and 35 <= sum(drawn) <= 65
    ranks = [
        BalancedDraw(
            labels, positive_fraction=0.5, seed=0, info=DistInfo(r, 3, r, torch.device("cpu"))
        )
        for r in range(3)
    ]
    shares = [list(r) for r in ranks]
    assert [len(s) for s in shares] == [34, 34, 34]  # padded to equal shares
    numbers = Counter(d for share in shares for _, d in share)
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


def test_resumed_training_ends_where_uninterrupted_training_ends(tmp_path: Path) -> None:
    quiet = Reporter(enabled=False)
    torch.manual_seed(0)
    straight = build_model(arch="resnet18")
    start = {k: v.clone() for k, v in straight.state_dict().items()}
    train_stage(
        straight,
        dataset(),
        StageSpec("holistic", tmp_path / "a" / "ck", 2, False),
        CFG,
        SINGLE,
        quiet,
    )

    class CrashInSecondEpoch(TrainImages):
        def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
            if self.epoch == 1:
                raise KeyboardInterrupt  # the process is killed mid-epoch
            return super().__getitem__(key)

    crashing = dataset(CrashInSecondEpoch)
    interrupted = build_model(arch="resnet18")
    interrupted.load_state_dict(start)
    spec = StageSpec("holistic", tmp_path / "b" / "ck", 2, False)
    with pytest.raises(KeyboardInterrupt):
        train_stage(interrupted, crashing, spec, CFG, SINGLE, quiet)
    saved = load_checkpoint(spec.checkpoint)
    assert saved is not None and saved["epoch"] == 0
    resumed = build_model(arch="resnet18")  # a new process starts from fresh weights
    resumed.load_state_dict(start)
    train_stage(resumed, dataset(), spec, CFG, SINGLE, quiet)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    assert not torch.equal(straight.fc.weight, start["fc.weight"])


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
