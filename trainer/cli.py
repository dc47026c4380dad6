"""mammo-train: index a site's exams, cross-validate the paper's models, report, export.

    mammo-train index DATA_DIR --labels labels.csv [--truth truth.csv] --out manifest.json
    mammo-train cv manifest.json --folds 10 --out RUN_DIR [--arch ... --input-size ...]
    mammo-train report RUN_DIR [--json] [--external NAME=CSV ...]
    mammo-train export RUN_DIR --out BUNDLE [--final-train | --best-fold]
    mammo-train calibrate BUNDLE MANIFEST [--prevalence P]    held-out exams -> calibration
    mammo-train evaluate BUNDLE MANIFEST --out DIR [--json]   external validation (Table 1)

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m trainer.cli cv ...``.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting for a descheduled peer make each
# step many times slower; sleeping waiters keep training usable. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from mammo_node.errors import MammoNodeError
from trainer.config import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def _fail(exc: MammoNodeError) -> typer.Exit:
    # one unbroken line (a path stays copyable) and the text as written, not read as markup
    console.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def index(
    data_dir: Annotated[Path, typer.Argument(help="Directory of DICOM files (or PNG + --views)")],
    out: Annotated[Path, typer.Option("--out", help="Manifest JSON to write")],
    labels: Annotated[Path | None, typer.Option("--labels", help="labels.csv (site data)")] = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="truth.csv (lesion centres)")
    ] = None,
    views: Annotated[
        Path | None,
        typer.Option(
            "--views", help="CSV file,study_uid,laterality,view[,sop_instance_uid] for PNG data"
        ),
    ] = None,
    data_format: Annotated[
        str,
        typer.Option(
            "--format", help="site (labels.csv) or a public layout: rsna, vindr, cmmd, cbis-ddsm"
        ),
    ] = "site",
) -> None:
    """Scan DATA_DIR into a dataset manifest (exams with exactly one image per slot)."""
    from trainer.data import index_dataset
    from trainer.errors import DataError
    from trainer.public import index_public

    try:
        if data_format != "site":
            if labels or views or truth:
                raise DataError("--labels, --truth and --views are for --format site only.")
            manifest = index_public(data_dir, data_format)
        else:
            if labels is None:
                raise DataError("--labels is needed for --format site.")
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("reading headers", total=None)
                manifest = index_dataset(
                    data_dir,
                    labels_csv=labels,
                    truth_csv=truth,
                    views_csv=views,
                    progress=lambda n, total: progress.update(task, completed=n, total=total),
                )
        manifest.save(out)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    counts = manifest.counts
    typer.echo(json.dumps(counts, indent=1))
    console.print(f"wrote {out}")


@app.command()
def cv(
    manifest: Annotated[Path, typer.Argument(help="Manifest from `mammo-train index`")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (resumes if it exists)")],
    folds: int = 10,
    arch: str = "resnet101",
    input_size: int = 976,
    roi_size: int = 976,
    roi_scale: float = 2.0,
    saliency_smoothing: Annotated[
        float,
        typer.Option(help="Gaussian sigma (input px) on |gradient| before the COA; 0 = paper"),
    ] = 0.0,
    coa_rule: Annotated[
        str,
        typer.Option(
            help="breast_region: strongest top-1 % region inside the breast; paper: centroid "
            "of the top 1 % of the whole map"
        ),
    ] = "breast_region",
    epochs: int = 10,
    attention_epochs: Annotated[int | None, typer.Option(help="default: --epochs")] = None,
    batch_size: Annotated[
        int, typer.Option(help="Global batch (split over DDP ranks; the paper's 4)")
    ] = 4,
    lr: float = 1e-4,
    positive_fraction: float = 0.5,
    device: str = "auto",
    seed: int = 0,
    workers: Annotated[
        int | None, typer.Option(help="Loader processes per rank (default: sized to the CPUs)")
    ] = None,
    amp: Annotated[
        bool | None,
        typer.Option("--amp/--no-amp", help="bf16 autocast; default on for CUDA, off on CPU"),
    ] = None,
    init: Annotated[
        str,
        typer.Option(
            help="imagenet: torchvision's ImageNet weights (the paper); scratch: random weights"
        ),
    ] = "imagenet",
    weights_file: Annotated[
        Path | None,
        typer.Option(
            help="Local ImageNet weights (torchvision layout; default: torch hub's cache)"
        ),
    ] = None,
    train_head_only: Annotated[
        bool, typer.Option(help="Adapted Pretrained: train fc only")
    ] = False,
    deterministic: bool = False,
    progress_every: Annotated[
        int, typer.Option(help="Steps between running-loss updates (one GPU sync each)")
    ] = 50,
    tensorboard: Annotated[
        bool, typer.Option(help="TensorBoard event files under RUN_DIR/tensorboard")
    ] = True,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    quiet: bool = False,
) -> None:
    """Cross-validate Holistic -> saliency ROIs -> Attention, fold by fold (resumable)."""
    from trainer.cv import run_cv

    if threads:
        torch.set_num_threads(threads)
    try:
        cfg = TrainConfig(
            arch=arch,
            input_size=input_size,
            roi_size=roi_size,
            roi_scale=roi_scale,
            saliency_smoothing=saliency_smoothing,
            coa_rule=coa_rule,
            epochs=epochs,
            attention_epochs=attention_epochs,
            batch_size=batch_size,
            lr=lr,
            positive_fraction=positive_fraction,
            folds=folds,
            seed=seed,
            device=device,
            workers=workers,
            amp=amp,
            init=init,
            weights_file=str(weights_file) if weights_file else None,
            train_head_only=train_head_only,
            deterministic=deterministic,
            progress_every=progress_every,
            tensorboard=tensorboard,
        )
        scores = run_cv(manifest, out, cfg, quiet=quiet)
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    typer.echo(f"held-out scores: {scores}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of `mammo-train cv`")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON")] = False,
    external: Annotated[
        list[str] | None,
        typer.Option(help="NAME=CSV[:COLUMN] exam scores of another model (study_uid, score)"),
    ] = None,
    subsample_negatives: Annotated[
        int | None, typer.Option(help="Keep all cancers and this many random normal exams")
    ] = None,
    bootstrap: int = 1000,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="Output dir (default RUN_DIR/report)")] = None,
) -> None:
    """Table 1 for this run: AUCs with bootstrap 95 % CIs, ROC PNG, Markdown and JSON."""
    from trainer.report import make_report, markdown

    try:
        result = make_report(
            run_dir,
            out_dir=out,
            externals=external or (),
            subsample_negatives=subsample_negatives,
            bootstrap=bootstrap,
            seed=seed,
        )
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    for lagging in result["folds"]["flagged"]:
        console.print(f"[yellow]warning[/yellow]: {lagging['reason']}.")
    typer.echo(json.dumps(result, indent=1) if as_json else markdown(result))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of `mammo-train cv`")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write")],
    final_train: Annotated[
        bool,
        typer.Option(
            "--final-train/--best-fold", help="Retrain on all exams, or take the best CV fold"
        ),
    ] = True,
    name: str = "mammo-node-model",
    version: str = "0.1.0",
    demo: Annotated[bool, typer.Option(help="Mark as a demo (not for clinical use)")] = False,
    sensitivity: Annotated[
        list[float] | None,
        typer.Option(help="Operating point sensitivities (repeatable); default 0.85 0.9 0.95"),
    ] = None,
    recall_rate: Annotated[
        float, typer.Option(help="Recall-rate operating point (0 = none)")
    ] = 0.05,
    calibration: Annotated[str, typer.Option(help="isotonic or platt")] = "isotonic",
    prevalence: Annotated[
        float | None,
        typer.Option(
            help="Screening-cancer prevalence to state probabilities at (default: "
            "that of the fitting exams)"
        ),
    ] = None,
    storage_dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16")] = "float32",
) -> None:
    """Write a model bundle (manifest.json + holistic/attention safetensors)."""
    from trainer.export import export_bundle

    try:
        written = export_bundle(
            run_dir,
            out,
            source="final_train" if final_train else "best_fold",
            name=name,
            version=version,
            is_demo=demo,
            sensitivities=sensitivity or (0.85, 0.9, 0.95),
            recall_rate=recall_rate,
            calibration_method=calibration,
            prevalence=prevalence,
            storage_dtype=storage_dtype,
        )
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    typer.echo(
        f"wrote bundle {written.name} {written.version} to {out} ({size:.1f} MB, "
        f"weights from {written.training['source']})"
    )
    if written.calibration is None:
        typer.echo(
            "no held-out exams for these weights: the bundle has no calibration or operating "
            f"points yet; run `mammo-train calibrate {out} HELD_OUT_MANIFEST`"
        )


@app.command()
def calibrate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (rewritten in place)")],
    manifest: Annotated[Path, typer.Argument(help="Manifest of exams it never trained on")],
    method: Annotated[str, typer.Option(help="isotonic or platt")] = "isotonic",
    prevalence: Annotated[
        float | None,
        typer.Option(
            help="Screening-cancer prevalence to state probabilities at (default: "
            "that of these exams)"
        ),
    ] = None,
    sensitivity: Annotated[
        list[float] | None, typer.Option(help="Operating point sensitivities (repeatable)")
    ] = None,
    recall_rate: Annotated[float, typer.Option(help="Recall-rate operating point")] = 0.05,
    source: Annotated[str, typer.Option(help="Which exams these are, recorded in the bundle")] = "",
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the calibration as JSON")] = False,
) -> None:
    """Fit probability, 1-10 categories and operating points for BUNDLE on MANIFEST's exams."""
    from trainer.external import calibrate_bundle

    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("scoring exams", total=None)
            fitted = calibrate_bundle(
                bundle,
                manifest,
                method=method,
                prevalence=prevalence,
                sensitivities=sensitivity or (0.85, 0.9, 0.95),
                recall_rate=recall_rate,
                device=device,
                source=source,
                progress=lambda n, total: progress.update(task, completed=n, total=total),
            )
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(fitted.to_json(), indent=1))
        return
    typer.echo(
        f"calibrated {bundle} on {fitted.exams} exams ({fitted.cancers} screening cancers, "
        f"{fitted.patients} patients), {fitted.method}, prevalence {fitted.prevalence:.4f}"
    )
    for p in fitted.points:
        typer.echo(
            f"  {p.name}: threshold {p.threshold:.3f}, sensitivity {p.sensitivity:.3f} "
            f"({p.true_positives}/{p.positives}; {p.sensitivity_ci[0]:.3f}-"
            f"{p.sensitivity_ci[1]:.3f}), specificity {p.specificity:.3f} "
            f"({p.true_negatives}/{p.negatives}; {p.specificity_ci[0]:.3f}-"
            f"{p.specificity_ci[1]:.3f}), recall rate {p.recall_rate:.3f}"
        )


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    manifest: Annotated[Path, typer.Argument(help="Manifest of another site's exams")],
    out: Annotated[Path, typer.Option("--out", help="Output directory")],
    bootstrap: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """External validation: Table 1 rows, operating points and calibration on new exams."""
    from trainer.external import evaluate_bundle
    from trainer.report import markdown

    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("scoring exams", total=None)
            result = evaluate_bundle(
                bundle,
                manifest,
                out,
                bootstrap=bootstrap,
                seed=seed,
                device=device,
                progress=lambda n, total: progress.update(task, completed=n, total=total),
            )
    except MammoNodeError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(result, indent=1) if as_json else markdown(result))


def main() -> None:
    # Logging goes to stderr and is set up before anything imports matplotlib, whose
    # first-use messages (font cache) must never reach the stdout of a --json command.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app()


if __name__ == "__main__":
    main()
