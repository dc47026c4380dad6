"""A tiny synthetic screening cohort for the trainer's CLI and DDP tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo_node.synth import SynthOptions, write_synthetic_dataset

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
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
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
    return root
