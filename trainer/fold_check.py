"""Each fold's training at a glance, and the folds whose holistic model did not learn.

From random weights the small CPU model finds the lesion feature at an epoch that varies with
the seed, sometimes not within the run's epochs (README, "the weak fold"): such a fold ends
with a training loss several times the other folds', a held-out AUC well below theirs and COAs
that miss the lesions, which then weakens its attention model (trained on crops around those
COAs). Pooled over folds the run's table hides it; this says which fold, from the records the
run already keeps: each stage's checkpoint JSON (final epoch, loss, per-epoch history) and the
held-out scores.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from trainer.stats import image_aucs

STAGES = ("holistic", "attention")
# A fold is flagged when its final holistic training loss is at least LOSS_RATIO times the
# median of the run's folds and at least LOSS_MARGIN above it (tiny losses differ by large
# ratios without meaning anything).
LOSS_RATIO = 2.0
LOSS_MARGIN = 0.05
MIN_FOLDS = 3  # a median of fewer folds says nothing about which one is off


class HeldOutImage(Protocol):
    @property
    def label(self) -> int: ...
    @property
    def scores(self) -> Mapping[str, float]: ...
    @property
    def fold(self) -> int: ...


def stage_record(fold_dir: Path, stage: str) -> dict[str, Any] | None:
    """The stage's last epoch as its checkpoint JSON keeps it, or None (not trained here)."""
    path = fold_dir / f"{stage}.checkpoint.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        extra = meta.get("extra", {})
        loss = extra.get("loss")
        return {
            "epochs": int(meta["epoch"]) + 1,
            "loss": None if loss is None else float(loss),
            "train_auc": extra.get("auc"),
            "loss_history": [float(h["loss"]) for h in extra.get("history", [])],
        }
    except (ValueError, KeyError, TypeError):
        return None  # a record from another version: the fold is shown without it


def fold_summary(
    run_dir: Path,
    images: Sequence[HeldOutImage],
    coa_rates: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per fold: each stage's final training loss, held-out image AUC per model and (with
    truth) the COA-in-lesion rate; ``flagged``: the folds whose holistic model lags, each with
    the reason in words."""
    by_fold: dict[int, list[HeldOutImage]] = {}
    for image in images:
        by_fold.setdefault(image.fold, []).append(image)
    folds: dict[str, dict[str, Any]] = {}
    for k in sorted(by_fold):
        held = by_fold[k]
        entry: dict[str, Any] = {
            "images": len(held),
            "held_out_image_auc": image_aucs(
                [i for i in held if i.label == 1], [i for i in held if i.label == 0]
            ),
        }
        for stage in STAGES:
            entry[stage] = stage_record(run_dir / f"fold_{k:02d}", stage)
        rate = (coa_rates or {}).get(str(k))
        if rate and rate.get("n"):
            entry["coa_in_lesion_rate"] = rate["coa_in_lesion_rate"]
        folds[str(k)] = entry
    return {"folds": folds, "flagged": lagging_folds(folds)}


def lagging_folds(folds: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The folds whose final holistic training loss stands far above the run's median."""
    losses = {
        k: f["holistic"]["loss"]
        for k, f in folds.items()
        if f.get("holistic") and f["holistic"].get("loss") is not None
    }
    if len(losses) < MIN_FOLDS:
        return []
    median = statistics.median(losses.values())
    flagged = []
    for k, loss in losses.items():
        if loss >= LOSS_RATIO * median and loss - median >= LOSS_MARGIN:
            entry = folds[k]
            auc = entry["held_out_image_auc"].get("holistic")
            reason = (
                f"fold {k}: holistic training loss {loss:.3f} after "
                f"{entry['holistic']['epochs']} epochs, {loss / median:.1f}x the run's median "
                f"({median:.3f})"
            )
            if auc is not None:
                reason += f"; held-out image AUC {auc:.3f}"
            if entry.get("coa_in_lesion_rate") is not None:
                reason += f"; COA in the lesion {entry['coa_in_lesion_rate']:.1%}"
            reason += (
                ". Its model may not have learned the finding (from random weights the epoch "
                "at which it does varies with the seed): a new run with more --epochs, another "
                "--seed or --init imagenet"
            )
            flagged.append({"fold": int(k), "loss": loss, "median_loss": median, "reason": reason})
    return flagged
