"""A tiny synthetic screening cohort for the trainer's CLI and DDP tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from mammo_node.synth import SynthOptions, write_synthetic_dataset


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


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


IMAGENET_RESNET18 = "resnet18-f37072fd.pth"  # torchvision's file name for its ImageNet weights


def write_torchvision_weights(torch_home: Path, arch: str = "resnet18") -> Path:
    """A torchvision-layout weights file where torch hub keeps it (random values: nothing is
    downloaded; the layout - RGB stem, 1000-class head - is what matters)."""
    assert arch == "resnet18"
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


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Synthetic exams in root/data; TORCH_HOME points at root/torch_home, which holds
    torchvision-layout ResNet-18 ImageNet weights (so the default --init imagenet works)."""
    root = tmp_path_factory.mktemp("cohort")
    write_torchvision_weights(root / "torch_home")
    write_synthetic_dataset(
        root / "data",
        SynthOptions(
            rows=96,
            columns=80,
            exams=12,
            seed=5,
            screening_fraction=0.35,
            interval_fraction=0.15,
            lesion_radius_mm=(8.0, 12.0),
        ),
    )
    with pytest.MonkeyPatch.context() as patch, one_torch_thread():
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        yield root
