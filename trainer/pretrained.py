"""Where a run's starting weights come from: torchvision's ImageNet files, found locally.

The paper starts both models from ImageNet. Nothing is downloaded: the weights file is either
given (``--weights-file``) or looked up under torch hub's cache directory
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) under the
name torchvision gives it (e.g. ``resnet101-63fe2227.pth``), the place torchvision itself
would have saved it. ``mammo_node.ml.models.build_model`` sums the RGB stem over its three
channels and drops the 1000-class head.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm

from trainer.errors import RunError

INITS = ("imagenet", "scratch")

_WEIGHT_ENUMS = {
    "resnet18": tvm.ResNet18_Weights,
    "resnet34": tvm.ResNet34_Weights,
    "resnet50": tvm.ResNet50_Weights,
    "resnet101": tvm.ResNet101_Weights,
}


@dataclass(frozen=True)
class InitWeights:
    """The file a run starts from, with its sha256 (recorded in run and bundle)."""

    init: str  # "imagenet" or "scratch"
    path: Path | None
    sha256: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"init": self.init, "file": str(self.path or ""), "sha256": self.sha256}


def torchvision_file_names(arch: str) -> list[tuple[str, str]]:
    """(file name, download URL) of every ImageNet weight set torchvision knows for ``arch``,
    the V1 weights (the paper's era) first."""
    enum = _WEIGHT_ENUMS.get(arch)
    if enum is None:
        raise RunError(f'No ImageNet weights are known for "{arch}".')
    return [(Path(urlparse(w.url).path).name, w.url) for w in enum]


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_init(init: str, arch: str, weights_file: str | None) -> InitWeights:
    """The weights a run starts from; a clear error saying which file to put where."""
    if init not in INITS:
        raise RunError(f'Argument "init" should be one of {INITS}, got {init!r}.')
    if init == "scratch":
        if weights_file:
            raise RunError('"--weights-file" needs "--init imagenet", not "--init scratch".')
        return InitWeights("scratch", None)
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise RunError(f'Weights file "{path}" (--weights-file) does not exist.')
        return InitWeights("imagenet", path.resolve(), _sha256(path))
    names = torchvision_file_names(arch)
    directory = hub_checkpoint_dir()
    for name, _ in names:
        candidate = directory / name
        if candidate.is_file():
            return InitWeights("imagenet", candidate.resolve(), _sha256(candidate))
    name, url = names[0]
    raise RunError(
        f"ImageNet weights for {arch} were not found (nothing is downloaded). Put torchvision's "
        f'"{name}" (from {url}) into "{directory}" (torch hub\'s cache; set TORCH_HOME to move '
        "it), or give a local file with --weights-file, or train from random weights with "
        "--init scratch."
    )
