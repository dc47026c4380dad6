"""Trainer options small enough for seconds of CPU per fold (the CLI and DDP tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared CPU: one intra-op thread. With two, OpenMP threads spin
    waiting for a descheduled peer (the CLI sets OMP_WAIT_POLICY=PASSIVE before torch loads;
    inside pytest torch is already loaded) and a 48 px view takes 2.6 s instead of 0.3 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


IMAGENET_RESNET18 = "resnet18-f37072fd.pth"  # torchvision's file name for its ImageNet weights


def write_torchvision_weights(torch_home: Path, arch: str = "resnet18") -> Path:
    """A torchvision-layout weights file where torch hub keeps it (random values: nothing is
    downloaded; the layout - RGB stem, 1000-class head - is what matters)."""
    if arch != "resnet18":
        raise ValueError(f'arch should be "resnet18", got {arch!r}')
    path = torch_home / "hub" / "checkpoints" / IMAGENET_RESNET18
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(123)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


# Small enough for seconds of CPU per fold: 48 px model input, 32 px ROIs from 72 px wide hires.
TINY_CV = [
    "--arch",
    "resnet18",
    "--input-size",
    "48",
    "--roi-size",
    "32",
    "--roi-scale",
    "1.5",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--lr",
    "1e-3",
]


def invoke_trainer(*args: str) -> str:
    """``mammo-train ARGS`` in process; its stdout (a failure shows the whole output)."""
    from typer.testing import CliRunner

    from trainer.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def index_synthetic(data: Path, manifest: Path) -> str:
    """``mammo-train index`` over a folder the generator wrote (labels.csv + truth.csv)."""
    return invoke_trainer(
        "index",
        str(data),
        "--labels",
        str(data / "labels.csv"),
        "--truth",
        str(data / "truth.csv"),
        "--out",
        str(manifest),
    )
