"""The paper's Table 1 for a cross-validated run: exam-level AUCs with bootstrap 95 % CIs.

Two tasks: screening cancers vs the rest (interval cancers and normals), and screening +
interval cancers vs normals. Exam scores come from image scores through
``mammo_node.ml.scoring`` (the same function the node uses). Rows: holistic, attention,
ensemble (named ``adapted_pretrained*`` when the run trained the head only, the paper's
"Adapted Pretrained"; the weights' origin, ``init``, is reported beside the table), one / two
radiologists when reader scores were indexed, and any external model's exam scores.

Every row states its n and number of cancers (rows may cover different exams, e.g. reader
scores for some only); CIs resample patients, not exams (``trainer.stats``); the paired
DeLong test compares the ensemble with holistic and with attention on the same exams.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mammo_node.domain import Laterality, Slot
from mammo_node.ml.scoring import one_reader_exam_score, score_exam, two_reader_exam_score
from trainer.config import TrainConfig
from trainer.data import ExamRecord, Manifest
from trainer.errors import DataError, RunError
from trainer.fold_check import STAGES, fold_summary
from trainer.stats import delong_paired, image_aucs, patient_bootstrap_auc

TASKS = {
    "screening": ("Screening vs rest", ("screening",)),
    "screening_interval": ("Screening + interval vs rest", ("screening", "interval")),
}
MODEL_ROWS = ("holistic", "attention", "ensemble")


@dataclass
class ImageScores:
    study_uid: str
    slot: Slot
    label: int
    scores: dict[str, float]
    coa: tuple[float, float]
    box: tuple[int, int, int, int]
    fold: int


def read_cv_scores(path: Path) -> list[ImageScores]:
    if not path.is_file():
        raise RunError(f'"{path}" does not exist: run `mammo-train cv` to the end first.')
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(
                ImageScores(
                    study_uid=row["study_uid"],
                    slot=Slot.parse(row["slot"]),
                    label=int(row["label"]),
                    scores={m: float(row[m]) for m in MODEL_ROWS},
                    coa=(float(row["coa_x"]), float(row["coa_y"])),
                    box=tuple(int(float(row[k])) for k in ("roi_x0", "roi_y0", "roi_x1", "roi_y1")),  # type: ignore[arg-type]
                    fold=int(row["fold"]),
                )
            )
    return out


def model_exam_scores(images: Sequence[ImageScores]) -> dict[str, dict[str, float]]:
    """row name -> study_uid -> exam score (breast = CC + MLO, exam = max)."""
    by_exam: dict[str, list[ImageScores]] = {}
    for image in images:
        by_exam.setdefault(image.study_uid, []).append(image)
    out: dict[str, dict[str, float]] = {m: {} for m in MODEL_ROWS}
    for study, views in by_exam.items():
        for model in MODEL_ROWS:
            out[model][study] = score_exam({v.slot: v.scores[model] for v in views}).exam_score
    return out


def reader_exam_scores(exams: Sequence[ExamRecord]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for exam in exams:
        r = exam.readers
        first = {Laterality(k[-1]): v for k, v in r.items() if k.startswith("reader1_")}
        second = {Laterality(k[-1]): v for k, v in r.items() if k.startswith("reader2_")}
        if len(first) == 2:
            out.setdefault("one_radiologist", {})[exam.study_uid] = one_reader_exam_score(first)
            if len(second) == 2:
                out.setdefault("two_radiologists", {})[exam.study_uid] = two_reader_exam_score(
                    first, second
                )
    return out


def read_external(spec: str) -> tuple[str, dict[str, float]]:
    """NAME=CSV[:COLUMN]; the CSV has study_uid and the score column (default ``score``)."""
    if "=" not in spec:
        raise DataError(f'--external should be NAME=CSV[:COLUMN], got "{spec}".')
    name, rest = spec.split("=", 1)
    path_text, _, column = rest.partition(":")
    column = column or "score"
    path = Path(path_text)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"study_uid", column} <= set(reader.fieldnames or ()):
                raise DataError(
                    f'"{path}" needs columns study_uid and {column}; it has {reader.fieldnames}.'
                )
            return name.strip(), {r["study_uid"]: float(r[column]) for r in reader}
    except OSError as exc:
        raise DataError(f'External scores "{path}" cannot be read: {exc}') from exc


@dataclass
class Evaluation:
    studies: list[str]
    outcomes: dict[str, str]
    rows: dict[str, dict[str, float]]  # row -> study -> score
    bootstrap: int
    seed: int
    notes: list[str] = field(default_factory=list)
    patients: dict[str, str] = field(default_factory=dict)  # study -> patient (for the CIs)

    def labels(self, task: str, studies: Sequence[str]) -> np.ndarray:
        positive = TASKS[task][1]
        return np.array([self.outcomes[s] in positive for s in studies], dtype=int)

    def auc(self, row: str, task: str) -> dict[str, Any]:
        studies = [s for s in self.studies if s in self.rows[row]]
        y = self.labels(task, studies)
        scores = np.array([self.rows[row][s] for s in studies])
        if len(set(y.tolist())) < 2:
            return {"auc": None, "ci": [None, None], "n": len(studies), "positives": int(y.sum())}
        lo, hi = patient_bootstrap_auc(
            y,
            scores,
            [self.patients.get(s, s) for s in studies],
            resamples=self.bootstrap,
            seed=self.seed,
        )
        ci = [lo, hi]
        return {
            "auc": float(roc_auc_score(y, scores)),
            "ci": ci,
            "n": len(studies),
            "positives": int(y.sum()),
        }

    def compare(self, first: str, second: str, task: str) -> dict[str, Any]:
        """Paired DeLong test of two rows on the exams both scored."""
        studies = [s for s in self.studies if s in self.rows[first] and s in self.rows[second]]
        y = self.labels(task, studies)
        return delong_paired(
            y.tolist(),
            [self.rows[first][s] for s in studies],
            [self.rows[second][s] for s in studies],
        )


def comparisons(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """The paper's comparisons: ensemble vs holistic and vs attention, both tasks."""
    prefix = "adapted_pretrained_" if "adapted_pretrained_ensemble" in evaluation.rows else ""
    ensemble = f"{prefix}ensemble"
    others = [("adapted_pretrained" if prefix else "holistic"), f"{prefix}attention"]
    out: dict[str, dict[str, Any]] = {}
    if ensemble not in evaluation.rows:
        return out
    for other in others:
        if other in evaluation.rows:
            out[f"{ensemble}_vs_{other}"] = {
                task: evaluation.compare(ensemble, other, task) for task in TASKS
            }
    return out


def _rates(hits: Sequence[tuple[bool, bool]]) -> dict[str, Any]:
    if not hits:
        return {"coa_in_lesion_rate": None, "lesion_in_roi_rate": None, "n": 0}
    return {
        "coa_in_lesion_rate": sum(h[0] for h in hits) / len(hits),
        "lesion_in_roi_rate": sum(h[1] for h in hits) / len(hits),
        "n": len(hits),
    }


def localisation(images: Sequence[ImageScores], manifest: Manifest) -> dict[str, Any]:
    """Share of positive held-out images whose COA lies inside the true lesion, and whose
    lesion centre lies inside the ROI: overall, for small lesions (radius at most the median
    of these lesions) and per fold."""
    sop_of = {
        (e.study_uid, s): i.sop_instance_uid for e in manifest.exams for s, i in e.images.items()
    }
    found: list[tuple[int, float, bool, bool]] = []
    radius_of: list[tuple[ImageScores, float]] = []
    for image in images:
        lesion = manifest.truth.get(sop_of.get((image.study_uid, image.slot), ""))
        if image.label != 1 or lesion is None:
            continue
        radius_of.append((image, lesion.radius))
        x0, y0, x1, y1 = image.box
        found.append(
            (
                image.fold,
                lesion.radius,
                math.dist(image.coa, (lesion.x, lesion.y)) <= lesion.radius,
                x0 <= lesion.x < x1 and y0 <= lesion.y < y1,
            )
        )
    result = _rates([(a, b) for _, _, a, b in found])
    if found:
        cut = float(np.median([r for _, r, _, _ in found]))
        negatives = [i for i in images if i.label == 0]
        result["small"] = {
            **_rates([(a, b) for _, r, a, b in found if r <= cut]),
            "radius_at_most": cut,
            # image AUC of these small-lesion images vs every negative image, per model (the
            # paper: attention >= holistic on small findings)
            "image_auc": image_aucs([i for i, r in radius_of if r <= cut], negatives),
        }
        result["image_auc"] = image_aucs([i for i, _ in radius_of], negatives)
        result["folds"] = {
            str(k): _rates([(a, b) for f, _, a, b in found if f == k])
            for k in sorted({f for f, _, _, _ in found})
        }
    return result


def build_evaluation(
    run_dir: Path,
    *,
    externals: Sequence[str] = (),
    subsample_negatives: int | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[Evaluation, list[ImageScores], Manifest, TrainConfig]:
    run = json.loads((run_dir / "run.json").read_text())
    cfg = TrainConfig.from_dict(run["config"])
    manifest = Manifest.load(Path(run["manifest"]))
    images = read_cv_scores(run_dir / "cv_scores.csv")
    rows = model_exam_scores(images)
    if cfg.adapted:
        rows = {
            ("adapted_pretrained" if k == "holistic" else f"adapted_pretrained_{k}"): v
            for k, v in rows.items()
        }
    scored = set(next(iter(rows.values())))
    exams = [e for e in manifest.exams if e.study_uid in scored]
    rows.update(reader_exam_scores(exams))
    for spec in externals:
        name, scores = read_external(spec)
        rows[name] = scores
    studies = sorted(scored)
    outcomes = {e.study_uid: e.outcome for e in exams}
    notes = []
    if subsample_negatives is not None:
        normals = [s for s in studies if outcomes[s] == "normal"]
        if subsample_negatives < len(normals):
            rng = np.random.default_rng(seed)
            keep = set(rng.choice(normals, subsample_negatives, replace=False).tolist())
            studies = [s for s in studies if outcomes[s] != "normal" or s in keep]
            notes.append(f"normal exams subsampled to {subsample_negatives} of {len(normals)}")
    patients = {e.study_uid: e.patient_id for e in exams}
    evaluation = Evaluation(studies, outcomes, rows, bootstrap, seed, notes, patients)
    return evaluation, images, manifest, cfg


def table(evaluation: Evaluation) -> dict[str, dict[str, dict[str, Any]]]:
    return {row: {task: evaluation.auc(row, task) for task in TASKS} for row in evaluation.rows}


def markdown(result: Mapping[str, Any]) -> str:
    def cell(entry: Mapping[str, Any]) -> str:
        if entry["auc"] is None:
            return "n/a"
        lo, hi = entry["ci"]
        return (
            f"{entry['auc']:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{entry['auc']:.3f}"
        )

    counts = result["counts"]
    lines = [
        "| Model | AUC screening vs rest (95 % CI) | n (cancers) "
        "| AUC screening + interval vs rest (95 % CI) | n (cancers) |",
        "|---|---|---|---|---|",
    ]
    for row, tasks in result["rows"].items():
        first, both = tasks["screening"], tasks["screening_interval"]
        lines.append(
            f"| {row} | {cell(first)} | {first['n']} ({first['positives']}) "
            f"| {cell(both)} | {both['n']} ({both['positives']}) |"
        )
    for name, tasks in result.get("comparisons", {}).items():
        parts = []
        for task, test in tasks.items():
            if test["p"] is not None:
                parts.append(f"{task} {test['difference']:+.3f} (p = {test['p']:.3g})")
        if parts:
            lines.append(f"\nDeLong, {name.replace('_vs_', ' vs ')}: " + "; ".join(parts) + ".")
    loc = result["localization"]
    lines += [
        "",
        f"Exams: {counts['exams']} ({counts['screening']} screening cancers, "
        f"{counts['interval']} interval cancers, {counts['normal']} normals); "
        f"bootstrap: {result['bootstrap']} resamples.",
    ]
    if loc["n"]:
        lines.append(
            f"Localisation: COA inside the true lesion for {loc['coa_in_lesion_rate']:.1%}"
            f" of {loc['n']} positive images; lesion centre inside the ROI for "
            f"{loc['lesion_in_roi_rate']:.1%}."
        )
        small = loc.get("small")
        if small and small["n"]:
            lines.append(
                f"Small lesions (radius <= {small['radius_at_most']:.1f} stored px): COA inside "
                f"{small['coa_in_lesion_rate']:.1%} of {small['n']}; lesion in ROI "
                f"{small['lesion_in_roi_rate']:.1%}."
            )
            aucs = small.get("image_auc") or {}
            if all(aucs.get(m) is not None for m in ("holistic", "attention")):
                lines.append(
                    f"Small lesions vs all negative images, image AUC: holistic "
                    f"{aucs['holistic']:.3f}, attention {aucs['attention']:.3f}"
                    + (f", ensemble {aucs['ensemble']:.3f}." if aucs.get("ensemble") else ".")
                )
    lines += fold_lines(result.get("folds"))
    points = [p for p in result.get("operating_points", ()) if p.get("expected_sensitivity_range")]
    if points:
        lines += [
            "",
            "| Operating point | sensitivity (expected here) | specificity (expected here) "
            "| as claimed |",
            "|---|---|---|---|",
        ]
        for p in points:
            cells = []
            for key in ("sensitivity", "specificity"):
                lo, hi = p[f"expected_{key}_range"]
                value = "n/a" if p[key] is None else f"{p[key]:.3f}"
                cells.append(f"{value} ({lo:.3f}-{hi:.3f})")
            verdict = {True: "yes", False: "**no**", None: "n/a"}[p.get("as_claimed")]
            lines.append(f"| {p['name']} | {cells[0]} | {cells[1]} | {verdict} |")
    lines += [f"Note: {n}." for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def fold_lines(summary: Mapping[str, Any] | None) -> list[str]:
    """Per fold: training losses, held-out image AUCs, COA in lesion; then any flagged fold."""
    if not summary or not summary["folds"]:
        return []

    def number(value: float | None, form: str = ".3f") -> str:
        return "n/a" if value is None else format(value, form)

    lines = [
        "",
        "| Fold | holistic loss (epochs) | attention loss (epochs) | held-out image AUC "
        "holistic / attention / ensemble | COA in lesion |",
        "|---|---|---|---|---|",
    ]
    for k, fold in summary["folds"].items():
        stages = []
        for stage in STAGES:
            record = fold.get(stage)
            stages.append("n/a" if not record else f"{number(record['loss'])} ({record['epochs']})")
        aucs = fold["held_out_image_auc"]
        held = " / ".join(number(aucs.get(m)) for m in MODEL_ROWS)
        lines.append(
            f"| {k} | {stages[0]} | {stages[1]} | {held} "
            f"| {number(fold.get('coa_in_lesion_rate'), '.1%')} |"
        )
    lines += [f"\n**Warning**, {f['reason']}." for f in summary["flagged"]]
    return lines


def roc_png(evaluation: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (task, (title, _)) in zip(axes, TASKS.items(), strict=True):
        for row, scores in evaluation.rows.items():
            studies = [s for s in evaluation.studies if s in scores]
            y = evaluation.labels(task, studies)
            if len(set(y.tolist())) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, [scores[s] for s in studies])
            ax.plot(fpr, tpr, label=f"{row} ({roc_auc_score(y, [scores[s] for s in studies]):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
        ax.set(title=title, xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_report(
    run_dir: Path,
    *,
    out_dir: Path | None = None,
    externals: Sequence[str] = (),
    subsample_negatives: int | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute the table, write table.md / table.json / roc.png / exam_scores.csv."""
    evaluation, images, manifest, _cfg = build_evaluation(
        run_dir,
        externals=externals,
        subsample_negatives=subsample_negatives,
        bootstrap=bootstrap,
        seed=seed,
    )
    outcomes = [evaluation.outcomes[s] for s in evaluation.studies]
    run = json.loads((run_dir / "run.json").read_text())
    located = localisation(images, manifest)
    result = {
        "rows": table(evaluation),
        "comparisons": comparisons(evaluation),
        "init": run.get("init", {"init": _cfg.init, "file": _cfg.weights_file or ""}),
        "localization": located,
        "folds": fold_summary(run_dir, images, located.get("folds")),
        "counts": {
            "exams": len(outcomes),
            "screening": outcomes.count("screening"),
            "interval": outcomes.count("interval"),
            "normal": outcomes.count("normal"),
        },
        "bootstrap": bootstrap,
        "notes": evaluation.notes,
    }
    out_dir = out_dir or run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "table.md").write_text(markdown(result))
    roc_png(evaluation, out_dir / "roc.png")
    with (out_dir / "exam_scores.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        names = list(evaluation.rows)
        writer.writerow(["study_uid", "outcome", *names])
        for s in evaluation.studies:
            writer.writerow(
                [s, evaluation.outcomes[s], *(evaluation.rows[n].get(s, "") for n in names)]
            )
    return result
