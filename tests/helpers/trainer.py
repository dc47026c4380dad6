"""Trainer options small enough for seconds of CPU per fold (the CLI and DDP tests)."""

from __future__ import annotations

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
