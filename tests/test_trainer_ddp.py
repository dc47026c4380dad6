"""torchrun with 2 CPU processes (gloo): the work is shared and the replicas stay in sync."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer import TINY_CV
from trainer.data import index_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_two_process_gloo_cross_validation(tiny_cohort: Path) -> None:
    data, run = tiny_cohort / "data", tiny_cohort / "ddp-run"
    manifest = tiny_cohort / "ddp-manifest.json"
    index_dataset(data, labels_csv=data / "labels.csv", truth_csv=data / "truth.csv").save(manifest)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "trainer.cli",
        "cv",
        str(manifest),
        "--folds",
        "2",
        "--out",
        str(run),
        "--quiet",
        *TINY_CV,
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with (run / "cv_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and len({r["sop_instance_uid"] for r in rows}) == 48
    for fold in ("fold_00", "fold_01"):
        parts = [json.loads((run / fold / f"rois.rank{r}.json").read_text()) for r in (0, 1)]
        assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])  # split, not repeated
        for stage in ("holistic", "attention"):
            meta = json.loads((run / fold / f"{stage}.checkpoint.json").read_text())
            assert meta["extra"]["world"] == 2
            assert meta["extra"]["per_rank_batch"] == 4  # the global batch 8, split
            first, second = meta["extra"]["param_checksums"]
            assert first == pytest.approx(second, rel=1e-9)  # gradients were all-reduced
