"""Data for tests, demos and benchmarks: `synth` and `wrap`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mammo_node.errors import MammoNodeError

if TYPE_CHECKING:
    pass
from mammo_node.cli.app import app
from mammo_node.cli.common import out


# --- data for tests, demos and benchmarks --------------------------------------------------
@app.command()
def synth(
    out_dir: Path,
    exams: Annotated[int, typer.Option("--exams", min=0)] = 10,
    rows: Annotated[int, typer.Option("--rows", help="Image height (4096 / 2294 full size)")] = 512,
    columns: Annotated[int, typer.Option("--columns", help="Image width (3328 / 1914)")] = 416,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    screening_fraction: Annotated[float, typer.Option("--screening-fraction")] = 0.3,
    interval_fraction: Annotated[float, typer.Option("--interval-fraction")] = 0.1,
    lesion_contrast: Annotated[float, typer.Option("--lesion-contrast")] = 0.25,
    lesion_radius_mm: Annotated[
        tuple[float, float], typer.Option("--lesion-radius-mm", help="MIN MAX radius of masses")
    ] = (6.0, 12.0),
    habit: Annotated[
        list[str] | None,
        typer.Option(
            "--habit",
            help="site-traffic habit to add to every exam (repeatable): repeat, companions, "
            "synthetic-2d, rejection, prior-merged, empty-patient-id, rle, j2k",
        ),
    ] = None,
    recent: Annotated[
        bool, typer.Option("--recent", help="date the exams today (else 2018-2021: priors)")
    ] = False,
) -> None:
    """Synthetic screening exams (MG For Presentation) + labels.csv + truth.csv (lesions)."""
    from mammo_node.synth import SynthOptions, write_synthetic_dataset

    options = SynthOptions(
        rows=rows,
        columns=columns,
        exams=exams,
        seed=seed,
        screening_fraction=screening_fraction,
        interval_fraction=interval_fraction,
        lesion_contrast=lesion_contrast,
        habits=tuple(habit or ()),
        recent=recent,
    )
    summary = write_synthetic_dataset(out_dir, options)
    outcomes = ", ".join(f"{n} {k}" for k, n in summary.outcomes.items())
    out.print(
        f"{summary.exams} exams ({summary.images} images, {summary.patients} patients: "
        f"{outcomes}) in {out_dir} [{summary.seconds:.1f} s]\n"
        f"labels: {summary.labels_csv}\nlesions: {summary.truth_csv}"
    )


@app.command()
def wrap(
    source: Annotated[str, typer.Argument(help="nyu or mias")],
    src_dir: Path,
    out_dir: Path,
) -> None:
    """Wrap the real PNG/PGM mammograms of ../shared/realdata into DICOM for sending.

    Lesion centres known for the source go to OUT_DIR/truth.csv (stored-pixel coordinates).
    """
    import csv
    from dataclasses import asdict

    from mammo_node.synth import wrap as wrapping

    if source == "nyu":
        datasets = wrapping.wrap_nyu_exam(src_dir)
        truth = wrapping.nyu_lesion_truth(src_dir, datasets)
    elif source == "mias":
        pairs = wrapping.wrap_mias(src_dir)
        datasets = [ds for ds, _ in pairs]
        truth = [t for _, lesions in pairs for t in lesions]
    else:
        raise MammoNodeError(f'source should be "nyu" or "mias", got {source!r}')
    files = wrapping.write_datasets(datasets, out_dir)
    if truth:
        rows = [asdict(t) for t in truth]
        with (out_dir / "truth.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    out.print(f"wrote {len(files)} DICOM file(s) and {len(truth)} lesion(s) to {out_dir}")
