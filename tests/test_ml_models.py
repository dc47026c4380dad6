"""build_model: architectures, 1-channel stem, 2 outputs, local weights only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from mammo_node.errors import ModelError
from mammo_node.ml.models import build_model, freeze_backbone


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_every_architecture_takes_one_channel_and_gives_two_logits(arch: str) -> None:
    model = build_model(arch=arch).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2)


def test_arguments_are_keyword_only_and_validated() -> None:
    with pytest.raises(TypeError):
        build_model("resnet18")  # type: ignore[misc]
    with pytest.raises(ValueError, match="got 'vgg16'"):
        build_model(arch="vgg16")
    with pytest.raises(ModelError, match="does not exist"):
        build_model(arch="resnet18", weights=Path("/nonexistent/w.safetensors"))


def test_imagenet_weights_stem_summed_and_head_replaced(tmp_path: Path) -> None:
    imagenet = resnet18(weights=None)  # stands in for a local ImageNet file: same layout
    pth = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet.state_dict(), pth)
    model = build_model(arch="resnet18", weights=pth)
    expected = imagenet.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.allclose(model.conv1.weight, expected)
    assert torch.equal(model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert model.fc.out_features == 2
    # The same through safetensors.
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(st))
    assert torch.allclose(build_model(arch="resnet18", weights=st).conv1.weight, expected)


def test_mismatched_weights_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    st = tmp_path / "r34.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build_model(arch="resnet34").state_dict().items()}, str(st)
    )
    with pytest.raises(ModelError, match="do not fit this architecture"):
        build_model(arch="resnet18", weights=st)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pth"
    torch.save({"model": build_model(arch="resnet18")}, bad)  # a whole module: needs pickle
    with pytest.raises(ModelError, match="cannot be read"):
        build_model(arch="resnet18", weights=bad)


def test_freeze_backbone_leaves_only_the_head_trainable() -> None:
    model = build_model(arch="resnet18")
    freeze_backbone(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
