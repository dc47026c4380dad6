"""The paper's start: torchvision's ImageNet weights from local files, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mammo_node.ml.models import build_model
from tests.helpers.trainer import IMAGENET_RESNET18, write_torchvision_weights
from trainer.config import TrainConfig
from trainer.errors import RunError
from trainer.pretrained import resolve_init


def test_imagenet_weights_come_from_torch_hubs_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write_torchvision_weights(tmp_path / "th")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    found = resolve_init("imagenet", "resnet18", None)
    assert found.path == file.resolve() and len(found.sha256) == 64
    model = build_model(arch="resnet18", weights=found.path)
    rgb = torch.load(file, weights_only=True)
    assert torch.allclose(model.conv1.weight, rgb["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, rgb["layer4.1.conv2.weight"])
    assert model.fc.out_features == 2
    # an explicit file wins, wherever it lies
    other = tmp_path / "elsewhere.pth"
    other.write_bytes(file.read_bytes())
    assert resolve_init("imagenet", "resnet18", str(other)).path == other.resolve()


def test_missing_weights_say_which_file_to_put_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(RunError) as caught:
        resolve_init("imagenet", "resnet18", None)
    text = str(caught.value)
    assert IMAGENET_RESNET18 in text and str(tmp_path / "empty" / "hub" / "checkpoints") in text
    assert "--weights-file" in text and "--init scratch" in text
    with pytest.raises(RunError, match="does not exist"):
        resolve_init("imagenet", "resnet18", str(tmp_path / "nope.pth"))
    assert resolve_init("scratch", "resnet18", None).path is None


def test_init_and_head_only_are_separate_settings() -> None:
    assert TrainConfig().init == "imagenet" and TrainConfig().batch_size == 4
    assert not TrainConfig().adapted  # an ImageNet start is the paper's recipe
    assert TrainConfig(train_head_only=True).adapted
    with pytest.raises(RunError, match="needs"):
        TrainConfig(init="scratch", weights_file="x.pth")
    # run.json written before the split still resumes
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in {"init", "weights_file"}}
    legacy = TrainConfig.from_dict({**old, "init_weights": None})
    assert legacy.init == "scratch" and legacy.weights_file is None
    legacy = TrainConfig.from_dict({**old, "init_weights": "/w.pth"})
    assert (legacy.init, legacy.weights_file, legacy.adapted) == ("imagenet", "/w.pth", False)
