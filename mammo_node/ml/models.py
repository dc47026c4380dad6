"""The paper's network: a torchvision ResNet with a 1-channel stem and 2 outputs.

Weights are only ever read from local files: safetensors, or a torchvision ``.pth`` state
dict read with ``torch.load(weights_only=True)`` (no pickle code execution).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

from mammo_node.errors import ModelError

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
}
NUM_CLASSES = 2  # index 0 negative, index 1 positive


def build_model(*, arch: str = "resnet101", weights: Path | None = None) -> nn.Module:
    """A ResNet for one greyscale image with 2 outputs (negative, positive).

    ``weights``: optional local file with either ImageNet weights (3-channel conv1 is summed
    over RGB, the 1000-class head dropped and re-initialised) or weights of this very model.
    """
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f'Argument "arch" should be one of {sorted(ARCHITECTURES)}, got {arch!r}.')
    if weights is not None and not isinstance(weights, (str, Path)):
        raise TypeError(f'Argument "weights" should be a path or None, got {type(weights)!r}.')
    model = ARCHITECTURES[arch](weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    if weights is not None:
        state = read_weights_file(Path(weights))
        load_compatible_state(model, state, source=str(weights))
    return model


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a local safetensors file or a plain torch state dict (no pickle code)."""
    if not path.is_file():
        raise ModelError(f'Weights file "{path}" does not exist.')
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, foreign format, refused pickle content
        raise ModelError(f'Weights file "{path}" cannot be read as a state dict: {exc}') from exc
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a torchvision reference-script checkpoint
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelError(f'Weights file "{path}" does not hold a mapping of names to tensors.')
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_compatible_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Load ``state`` into ``model``: adapt an RGB stem, drop a foreign head, else strict."""
    state = dict(state)
    stem = state.get("conv1.weight")
    if stem is not None and stem.ndim == 4 and stem.shape[1] == 3:
        state["conv1.weight"] = stem.sum(dim=1, keepdim=True)
        logger.info("Summed the RGB stem of %s over its 3 input channels.", source)
    head = state.get("fc.weight")
    if head is not None and head.shape[0] != NUM_CLASSES:
        state.pop("fc.weight", None)
        state.pop("fc.bias", None)
        logger.info(
            "Dropped the %d-class head of %s; the 2-class head starts fresh.", head.shape[0], source
        )
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state) - {"fc.weight", "fc.bias"})
    wrong = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if unexpected or missing or wrong:
        raise ModelError(
            f"Weights in {source} do not fit this architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]})."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head (the paper's "Adapted Pretrained"): all but ``fc`` frozen."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("fc."))
