"""A bundle on exams it never saw: calibrate it (``calibrate``) or validate it (``evaluate``).

Exams are scored by the node's own ``EnsembleScorer`` from the DICOM files of a manifest
(``mammo-train index``), exactly as the node would score them after deployment; view scores
give the holistic, attention and ensemble exam scores (breast = CC + MLO, exam = max).
Exams the bundle was trained on (its ``trained_on.json``) are refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from mammo_node.errors import MammoNodeError
from mammo_node.ml.bundle import LoadedBundle, load_bundle, rewrite_manifest
from mammo_node.ml.calibration import Calibration, PointDetail
from mammo_node.ml.inference import EnsembleScorer
from mammo_node.ml.scoring import score_exam
from trainer.calibrate import (
    DEFAULT_RECALL_RATE,
    DEFAULT_SENSITIVITIES,
    TRAINED_ON,
    fit_calibration,
    study_hash,
)
from trainer.data import Manifest, image_label
from trainer.errors import DataError
from trainer.report import (
    MODEL_ROWS,
    Evaluation,
    ImageScores,
    comparisons,
    localisation,
    markdown,
    roc_png,
    table,
)
from trainer.stats import expected_range

logger = logging.getLogger(__name__)


@dataclass
class ScoredExams:
    rows: dict[str, dict[str, float]]  # holistic / attention / ensemble -> study -> exam score
    images: list[ImageScores]
    outcomes: dict[str, str]
    patients: dict[str, str]


def _refuse_training_exams(bundle_dir: Path, manifest: Manifest) -> None:
    path = bundle_dir / TRAINED_ON
    if not path.is_file():
        return
    trained = set(json.loads(path.read_text()))
    overlap = [e for e in manifest.exams if study_hash(e.study_uid) in trained]
    if overlap:
        raise DataError(
            f"{len(overlap)} of the {len(manifest.exams)} exams were used to train this bundle; "
            "calibrate and evaluate on exams it never saw (remove them from the manifest)."
        )


def score_manifest(
    bundle: LoadedBundle,
    manifest: Manifest,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
) -> ScoredExams:
    scorer = EnsembleScorer(bundle, device=device, precision=precision)
    rows: dict[str, dict[str, float]] = {m: {} for m in MODEL_ROWS}
    images: list[ImageScores] = []
    for n, exam in enumerate(manifest.exams, start=1):
        if any(i.source != "dicom" for i in exam.images.values()):
            raise DataError("Scoring a bundle needs DICOM files; this manifest holds PNG images.")
        try:
            datasets = {
                slot: pydicom.dcmread(manifest.image_path(i)) for slot, i in exam.images.items()
            }
            result = scorer.score_exam(datasets, exam.study_uid)
        except (MammoNodeError, OSError, ValueError) as exc:
            logger.warning("An exam was left out: %s", exc)
            continue
        for model in MODEL_ROWS:
            rows[model][exam.study_uid] = score_exam(
                {slot: getattr(v, model) for slot, v in result.views.items()}
            ).exam_score
        for slot, view in result.views.items():
            images.append(
                ImageScores(
                    study_uid=exam.study_uid,
                    slot=slot,
                    label=image_label(exam, slot),
                    scores={m: getattr(view, m) for m in MODEL_ROWS},
                    coa=view.coa,
                    box=view.roi,
                    fold=0,
                )
            )
        if progress:
            progress(n, len(manifest.exams))
    scored = set(rows["ensemble"])
    if not scored:
        raise DataError("No exam of the manifest could be scored (see the log).")
    exams = [e for e in manifest.exams if e.study_uid in scored]
    return ScoredExams(
        rows,
        images,
        {e.study_uid: e.outcome for e in exams},
        {e.study_uid: e.patient_id for e in exams},
    )


def calibrate_bundle(
    bundle_dir: Path,
    manifest_path: Path,
    *,
    method: str = "isotonic",
    prevalence: float | None = None,
    sensitivities: Sequence[float] = DEFAULT_SENSITIVITIES,
    recall_rate: float = DEFAULT_RECALL_RATE,
    device: str = "cpu",
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Fit calibration, categories and operating points for the bundle's ensemble on the
    manifest's exams and write them into its manifest (weights untouched)."""
    manifest = Manifest.load(manifest_path)
    _refuse_training_exams(Path(bundle_dir), manifest)
    bundle = load_bundle(bundle_dir)
    scored = score_manifest(bundle, manifest, device=device, progress=progress)
    calibration, points = fit_calibration(
        scored.rows["ensemble"],
        scored.outcomes,
        scored.patients,
        method=method,
        prevalence=prevalence,
        sensitivities=sensitivities,
        recall_rate=recall_rate,
        source=source or f"exams of {Path(manifest_path).name}, scored by this bundle",
    )
    rewrite_manifest(
        Path(bundle_dir),
        dataclasses.replace(bundle.manifest, calibration=calibration, operating_points=points),
    )
    return calibration


def reliability(
    calibration: Calibration, scores: dict[str, float], outcomes: dict[str, str], bins: int = 10
) -> list[dict[str, float]]:
    """Predicted vs observed screening-cancer rate in bins of equal exam counts (at the
    fitting prevalence, so an enriched test set is compared like for like)."""
    restated = dataclasses.replace(calibration, prevalence=calibration.fitted_prevalence)
    studies = sorted(scores, key=lambda s: scores[s])
    out = []
    for part in np.array_split(np.array(studies, dtype=object), min(bins, len(studies))):
        if not len(part):
            continue
        predicted = [restated.probability(scores[s]) for s in part]
        observed = [outcomes[s] == "screening" for s in part]
        out.append(
            {
                "predicted": float(np.mean(predicted)),
                "observed": float(np.mean(observed)),
                "n": len(part),
            }
        )
    return out


def _reliability_png(bins: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.5, label="perfect")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", label="ensemble")
    ax.set(
        title="Reliability (screening cancer)",
        xlabel="predicted probability",
        ylabel="observed rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _expected(
    detail: PointDetail | None, measured: dict[str, Any], positives: int, negatives: int
) -> dict[str, Any]:
    """What the calibration's counts predict for a measurement on this many exams (the
    95 % range of ``trainer.stats.expected_range``) and whether the measurement is in it;
    nothing for a bundle calibrated before the counts were kept."""
    if detail is None or not detail.positives or not detail.negatives:
        return {"expected_sensitivity_range": None, "expected_specificity_range": None}
    sens = expected_range(
        detail.true_positives,
        detail.positives,
        positives,
        order_statistic=detail.chosen_on_cancers,
    )
    spec = expected_range(detail.true_negatives, detail.negatives, negatives, order_statistic=False)
    out: dict[str, Any] = {
        "expected_sensitivity_range": list(sens),
        "expected_specificity_range": list(spec),
    }
    checks = [
        lo <= measured[key] <= hi
        for key, (lo, hi) in (("sensitivity", sens), ("specificity", spec))
        if measured[key] is not None
    ]
    out["as_claimed"] = all(checks) if checks else None
    return out


def evaluate_bundle(
    bundle_dir: Path,
    manifest_path: Path,
    out_dir: Path,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """External validation: Table 1 rows (both tasks, patient-level CIs, DeLong), the
    bundle's operating points and calibration checked on these exams; PNG figures."""
    manifest = Manifest.load(manifest_path)
    _refuse_training_exams(Path(bundle_dir), manifest)
    bundle = load_bundle(bundle_dir)
    scored = score_manifest(bundle, manifest, device=device, progress=progress)
    studies = sorted(scored.outcomes)
    evaluation = Evaluation(
        studies, scored.outcomes, scored.rows, bootstrap, seed, [], scored.patients
    )
    ensemble = scored.rows["ensemble"]
    positives = [s for s in studies if scored.outcomes[s] == "screening"]
    negatives = [s for s in studies if scored.outcomes[s] != "screening"]
    points = []
    claimed = {p.name: p for p in (bundle.calibration.points if bundle.calibration else ())}
    for point in bundle.manifest.operating_points:
        sens = np.mean([ensemble[s] >= point.threshold for s in positives]) if positives else None
        spec = np.mean([ensemble[s] < point.threshold for s in negatives]) if negatives else None
        detail = claimed.get(point.name)
        entry: dict[str, Any] = {
            "name": point.name,
            "threshold": point.threshold,
            "sensitivity": None if sens is None else float(sens),
            "specificity": None if spec is None else float(spec),
            "positives": len(positives),
            "negatives": len(negatives),
            "claimed_sensitivity": point.sensitivity,
            "claimed_specificity": point.specificity,
            "claimed_sensitivity_ci": list(detail.sensitivity_ci) if detail else None,
            "claimed_specificity_ci": list(detail.specificity_ci) if detail else None,
        }
        entry.update(_expected(detail, entry, len(positives), len(negatives)))
        points.append(entry)
    outcomes = [scored.outcomes[s] for s in studies]
    result: dict[str, Any] = {
        "bundle": {"name": bundle.manifest.name, "version": bundle.manifest.version},
        "rows": table(evaluation),
        "comparisons": comparisons(evaluation),
        "localization": localisation(scored.images, manifest),
        "operating_points": points,
        "counts": {
            "exams": len(studies),
            "patients": len(set(scored.patients.values())),
            **{o: outcomes.count(o) for o in ("screening", "interval", "normal")},
        },
        "bootstrap": bootstrap,
        "notes": [],
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if bundle.calibration is not None:
        bins = reliability(bundle.calibration, ensemble, scored.outcomes)
        result["reliability"] = bins
        result["categories"] = {
            str(c): sum(bundle.calibration.category(ensemble[s]) == c for s in studies)
            for c in range(1, 11)
        }
        _reliability_png(bins, out_dir / "reliability.png")
    else:
        result["notes"].append("the bundle has no calibration: no reliability figure")
    (out_dir / "table.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "table.md").write_text(markdown(result))
    roc_png(evaluation, out_dir / "roc.png")
    with (out_dir / "exam_scores.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_uid", "outcome", *MODEL_ROWS])
        for s in studies:
            writer.writerow([s, scored.outcomes[s], *(scored.rows[m][s] for m in MODEL_ROWS)])
    return result
