"""The fold check: a fold whose holistic model did not learn is named, with its figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.checkpoint import save_checkpoint
from trainer.fold_check import fold_summary, lagging_folds
from trainer.report import fold_lines


@dataclass
class Image:
    label: int
    fold: int
    scores: dict[str, float] = field(default_factory=dict)


def _record(run: Path, fold: int, stage: str, losses: list[float]) -> None:
    """The stage's checkpoint JSON as train_stage leaves it after its last epoch."""
    history = [{"epoch": e + 1, "loss": loss, "auc": 0.9} for e, loss in enumerate(losses)]
    save_checkpoint(
        run / f"fold_{fold:02d}" / f"{stage}.checkpoint",
        model={"w": torch.zeros(2)},
        optimizer={"state": {}, "param_groups": []},
        scheduler={},
        epoch=len(losses) - 1,
        args={},
        extra={"stage": stage, "loss": losses[-1], "auc": 0.9, "history": history},
    )


def _images(fold: int, *, separates: bool) -> list[Image]:
    """Ten held-out images; the holistic score ranks them right, or not at all."""
    out = []
    for i in range(10):
        label = int(i >= 5)
        h = float(label) + 0.01 * i if separates else 0.5 + 0.01 * ((i * 7) % 10)
        out.append(Image(label, fold, {"holistic": h, "attention": h, "ensemble": h}))
    return out


def _run(tmp_path: Path, finals: list[float]) -> list[Image]:
    images = []
    for k, final in enumerate(finals):
        _record(tmp_path, k, "holistic", [0.6, 0.4, final])
        _record(tmp_path, k, "attention", [0.5, 0.3])
        images += _images(k, separates=final < 0.2)
    return images


def test_a_fold_that_stayed_at_a_high_loss_is_named_with_its_figures(tmp_path: Path) -> None:
    images = _run(tmp_path, [0.05, 0.08, 0.06, 0.29, 0.07])
    coa = {str(k): {"n": 6, "coa_in_lesion_rate": 1 / 6 if k == 3 else 1.0} for k in range(5)}
    summary = fold_summary(tmp_path, images, coa)
    assert [f["fold"] for f in summary["flagged"]] == [3]
    flagged = summary["flagged"][0]
    assert flagged["median_loss"] == 0.07 and flagged["loss"] == 0.29
    reason = flagged["reason"]
    assert "fold 3" in reason and "0.290" in reason and "3 epochs" in reason
    assert "held-out image AUC" in reason and "16.7%" in reason and "--epochs" in reason
    fold3 = summary["folds"]["3"]
    assert fold3["holistic"]["loss_history"] == [0.6, 0.4, 0.29]
    assert fold3["attention"]["epochs"] == 2
    assert summary["folds"]["0"]["held_out_image_auc"]["holistic"] == 1.0
    assert fold3["held_out_image_auc"]["holistic"] < 0.8

    lines = "\n".join(fold_lines(summary))
    assert "| 3 | 0.290 (3) | 0.300 (2) |" in lines and "16.7%" in lines
    assert lines.count("**Warning**") == 1


def test_folds_that_all_learned_are_not_flagged(tmp_path: Path) -> None:
    # tiny losses differ by large ratios without meaning anything
    assert (
        fold_summary(tmp_path, _run(tmp_path, [0.01, 0.012, 0.04, 0.011, 0.013]))["flagged"] == []
    )


def test_too_few_folds_or_records_flag_nothing(tmp_path: Path) -> None:
    images = _run(tmp_path, [0.05, 0.4])  # two folds: no median to stand out from
    assert fold_summary(tmp_path, images)["flagged"] == []
    # a fold without its records (trained elsewhere, or by an older version) shows n/a
    (tmp_path / "fold_01" / "holistic.checkpoint.json").write_text("{not json")
    summary = fold_summary(tmp_path, images)
    assert summary["folds"]["1"]["holistic"] is None
    assert "| 1 | n/a |" in "\n".join(fold_lines(summary))


def test_the_median_rule_itself() -> None:
    def fold(loss: float | None) -> dict[str, object]:
        return {"holistic": {"loss": loss, "epochs": 14}, "held_out_image_auc": {}}

    folds = {"0": fold(0.1), "1": fold(0.1), "2": fold(0.2), "3": fold(None)}
    assert [f["fold"] for f in lagging_folds(folds)] == [2]  # 2x the median and 0.1 above
    folds["2"] = fold(0.19)
    assert lagging_folds(folds) == []
