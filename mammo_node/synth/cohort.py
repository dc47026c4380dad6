"""A cohort: who gets which exam when (plan_exams), and the DICOM files plus labels.csv and
truth.csv that the trainer and the benchmarks read (write_synthetic_dataset)."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_node.synth.exams import generate_exam
from mammo_node.synth.identifiers import _seeded_rng
from mammo_node.synth.options import OUTCOMES, SynthExam, SynthOptions

logger = logging.getLogger(__name__)

LABEL_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "study_uid",
    "outcome",
    "cancer_laterality",
    "reader1_L",
    "reader1_R",
    "reader2_L",
    "reader2_R",
    "study_date",
    "density",
)
TRUTH_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "study_uid",
    "patient_id",
    "slot",
    "x",
    "y",
    "radius",
    "kind",
)


@dataclass
class SynthSummary:
    out_dir: Path
    exams: int
    images: int
    patients: int
    outcomes: dict[str, int]
    labels_csv: Path
    truth_csv: Path
    files: list[Path]
    seconds: float


@dataclass(frozen=True)
class ExamPlan:
    """Who, when and what, decided before any pixel is drawn."""

    index: int
    patient_id: str
    outcome: str
    cancer_laterality: str
    study_date: dt.date
    photometric: str
    bits_stored: int


def plan_exams(options: SynthOptions) -> list[ExamPlan]:
    """Outcomes, patients (some with two exams, the earlier normal), dates and pixel formats."""
    rng = _seeded_rng("plan", options.seed)
    n = options.exams
    n_screen = round(n * options.screening_fraction)
    n_interval = min(round(n * options.interval_fraction), n - n_screen)
    outcomes = ["screening"] * n_screen + ["interval"] * n_interval
    outcomes += ["normal"] * (n - len(outcomes))
    rng.shuffle(outcomes)
    n_mono1 = round(n * options.monochrome1_fraction)
    mono1 = set(rng.permutation(n)[:n_mono1].tolist())

    first_of_pair, second_of = _pair_repeat_exams(outcomes, options.repeat_patient_fraction, rng)
    patient_of: dict[int, int] = {}
    dates: dict[int, dt.date] = {}
    next_patient = 0
    for i in range(n):
        if i in patient_of:
            continue
        patient_of[i] = next_patient
        dates[i] = dt.date(2018, 1, 2) + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
        if i in first_of_pair:
            later = second_of[i]
            patient_of[later] = next_patient
            dates[later] = dates[i] + dt.timedelta(days=int(rng.integers(700, 760)))
        next_patient += 1
    plans = []
    for i, outcome in enumerate(outcomes):
        side = str(rng.choice(["L", "R"])) if outcome != "normal" else ""
        plans.append(
            ExamPlan(
                index=i,
                patient_id=f"SYN{options.seed:04d}-{patient_of[i]:05d}",
                outcome=outcome,
                cancer_laterality=side,
                study_date=dates[i],
                photometric="MONOCHROME1" if i in mono1 else "MONOCHROME2",
                bits_stored=int(rng.choice(options.bits_stored)),
            )
        )
    return plans


def _pair_repeat_exams(
    outcomes: list[str], fraction: float, rng: np.random.Generator
) -> tuple[set[int], dict[int, int]]:
    """Choose exam pairs of one woman; the earlier exam of a pair is normal when possible."""
    n_pairs = int(len(outcomes) * fraction) // 2
    order = [int(i) for i in rng.permutation(len(outcomes))]
    normals = [i for i in order if outcomes[i] == "normal"]
    free = set(order)
    first_of_pair: set[int] = set()
    second_of: dict[int, int] = {}
    for _ in range(n_pairs):
        firsts = [i for i in normals if i in free] or [i for i in order if i in free]
        first = firsts[0]
        free.discard(first)
        seconds = [i for i in order if i in free]
        if not seconds:
            break
        free.discard(seconds[0])
        first_of_pair.add(first)
        second_of[first] = seconds[0]
    return first_of_pair, second_of


def generate_exams(options: SynthOptions) -> Iterator[SynthExam]:
    """Yield ``options.exams`` exams; deterministic for ``options.seed``."""
    for plan in plan_exams(options):
        rng = _seeded_rng("exam", options.seed, plan.index)
        yield generate_exam(
            rng,
            options=options,
            patient_id=plan.patient_id,
            outcome=plan.outcome,
            cancer_laterality=plan.cancer_laterality,
            study_date=plan.study_date,
            photometric=plan.photometric,
            bits_stored=plan.bits_stored,
        )


def write_synthetic_dataset(out_dir: Path, options: SynthOptions) -> SynthSummary:
    """Write ``out_dir/<study_uid>/<slot>.dcm``, ``labels.csv`` and ``truth.csv``."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    patients: set[str] = set()
    outcomes = dict.fromkeys(OUTCOMES, 0)
    labels_csv, truth_csv = out_dir / "labels.csv", out_dir / "truth.csv"
    with labels_csv.open("w", newline="") as lf, truth_csv.open("w", newline="") as tf:
        labels = csv.DictWriter(lf, fieldnames=LABEL_COLUMNS)
        truths = csv.DictWriter(tf, fieldnames=TRUTH_COLUMNS)
        labels.writeheader()
        truths.writeheader()
        for exam in generate_exams(options):
            exam_dir = out_dir / exam.study_uid
            exam_dir.mkdir(exist_ok=True)
            for slot, ds in exam.datasets.items():
                path = exam_dir / f"{slot}.dcm"
                ds.save_as(path, enforce_file_format=True)
                files.append(path)
            files.extend(_write_habits(exam, options, exam_dir))
            labels.writerow(_label_row(exam))
            for t in exam.truth:
                truths.writerow({k: getattr(t, k) for k in TRUTH_COLUMNS})
            patients.add(exam.patient_id)
            outcomes[exam.outcome] += 1
    seconds = time.perf_counter() - started
    logger.info(
        "wrote %d synthetic exams (%d images) in %.1f s", options.exams, len(files), seconds
    )
    return SynthSummary(
        out_dir,
        options.exams,
        len(files),
        len(patients),
        outcomes,
        labels_csv,
        truth_csv,
        files,
        seconds,
    )


def _write_habits(exam: SynthExam, options: SynthOptions, exam_dir: Path) -> list[Path]:
    """Re-date the exam (``recent``) and write the objects its habits add, as extra-NN.dcm;
    the four clean views are rewritten when a habit changed them (syntax, identity)."""
    if not options.habits and not options.recent:
        return []
    from mammo_node.synth import habits as site_habits

    views = list(exam.datasets.values())
    if options.recent:
        site_habits.recent(views)
    objects = site_habits.add_habits(views, options.habits)
    for slot, ds in exam.datasets.items():
        ds.save_as(exam_dir / f"{slot}.dcm", enforce_file_format=True)
    extras = []
    for i, ds in enumerate(objects[len(views) :]):
        path = exam_dir / f"extra-{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        extras.append(path)
    return extras


def _label_row(exam: SynthExam) -> dict[str, object]:
    return {
        "patient_id": exam.patient_id,
        "study_uid": exam.study_uid,
        "outcome": exam.outcome,
        "cancer_laterality": exam.cancer_laterality,
        **exam.reader_scores,
        "study_date": exam.study_date,
        "density": exam.density,
    }
