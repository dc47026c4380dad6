"""Monitoring plots drawn server-side as PNG (matplotlib's Agg canvas: no display needed).

Figures are made with the object API, never pyplot, so that concurrent requests on the web
server's threads share no global state.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mammo_node.observe.monitor import MonitorReport, ScoredExam

SIZE = (7.5, 3.2)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _new() -> tuple[Figure, Axes]:
    figure = Figure(figsize=SIZE, dpi=100)
    return figure, figure.subplots()


def _empty(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def exams_per_week(report: MonitorReport, _exams: list[ScoredExam]) -> bytes:
    figure, axes = _new()
    by_scanner: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for group in report.groups:
        by_scanner[group.scanner][group.week] += group.exams
    weeks = report.weeks
    if not weeks:
        _empty(axes, "scored exams")
        return _png(figure)
    bottom = [0] * len(weeks)
    for scanner, counts in sorted(by_scanner.items()):
        values = [counts.get(w, 0) for w in weeks]
        axes.bar(weeks, values, bottom=bottom, label=scanner)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    failed = [report.failures.get(w, 0) for w in weeks]
    if any(failed):
        axes.plot(weeks, failed, "kx--", label="failed")
    axes.set_title("Exams scored per week, by scanner")
    axes.set_ylabel("exams")
    axes.legend(fontsize=7)
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _png(figure)


def score_distribution(report: MonitorReport, exams: list[ScoredExam]) -> bytes:
    figure, axes = _new()
    if not exams:
        _empty(axes, "scores")
        return _png(figure)
    by_model: dict[str, list[float]] = defaultdict(list)
    for exam in exams:
        by_model[exam.model].append(exam.score)
    for model, scores in sorted(by_model.items()):
        axes.hist(scores, bins=30, alpha=0.5, label=f"{model} (n={len(scores)})")
    axes.set_title("Exam score distribution, by model version")
    axes.set_xlabel("exam score")
    axes.set_ylabel("exams")
    axes.legend(fontsize=7)
    return _png(figure)


def recall_rate(report: MonitorReport, _exams: list[ScoredExam]) -> bytes:
    figure, axes = _new()
    if not report.groups or not report.operating_points:
        _empty(axes, "recall rates")
        return _png(figure)
    for point in report.operating_points:
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for g in report.groups:
            totals[g.week][0] += g.recall_rate.get(point, 0.0) * g.exams
            totals[g.week][1] += g.exams
        weeks = sorted(totals)
        axes.plot(weeks, [100 * totals[w][0] / totals[w][1] for w in weeks], "o-", label=point)
    axes.set_title("Recall rate per week at each operating point")
    axes.set_ylabel("% of exams")
    axes.legend(fontsize=7)
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _png(figure)


def drift(report: MonitorReport, _exams: list[ScoredExam]) -> bytes:
    figure, axes = _new()
    rows = [d for d in report.drift if d.psi is not None]
    if not rows:
        _empty(axes, "drift values (too few exams per week)")
        return _png(figure)
    by_model: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for row in rows:
        by_model[row.model].append((row.week, row.psi or 0.0))
    for model, points in sorted(by_model.items()):
        axes.plot([w for w, _ in points], [p for _, p in points], "o-", label=model)
    axes.axhline(report.threshold, color="red", linestyle="--", label="alert threshold")
    axes.set_title("Score drift per week (PSI against the reference population)")
    axes.set_ylabel("PSI")
    axes.legend(fontsize=7)
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _png(figure)


def category_drift(report: MonitorReport, _exams: list[ScoredExam]) -> bytes:
    """The latest week's 1-10 category shares per model against the reference's."""
    figure, axes = _new()
    latest = {row.model: row for row in report.category_drift}  # rows are in week order
    if not latest:
        _empty(axes, "categories (the bundle has no 1-10 scale)")
        return _png(figure)
    categories = list(range(1, 11))
    width = 0.8 / (len(latest) + 1)
    first = next(iter(latest.values()))
    axes.bar(
        [c - 0.4 + width / 2 for c in categories],
        [100 * v for v in first.expected],
        width,
        color="lightgray",
        label=f"expected ({first.reference})",
    )
    for i, (model, row) in enumerate(sorted(latest.items()), start=1):
        psi_text = f", PSI {row.psi:.2f}" if row.psi is not None else ""
        axes.bar(
            [c - 0.4 + width / 2 + i * width for c in categories],
            [100 * v for v in row.shares],
            width,
            label=f"{model} {row.week} (n={row.exams}{psi_text})",
        )
    axes.set_xticks(categories)
    axes.set_title("1-10 categories of the latest week against the reference population")
    axes.set_xlabel("category")
    axes.set_ylabel("% of exams")
    axes.legend(fontsize=7)
    return _png(figure)


def time_to_result(report: MonitorReport, _exams: list[ScoredExam]) -> bytes:
    figure, axes = _new()
    rows = [g for g in report.groups if g.time_to_result_p50 is not None]
    if not rows:
        _empty(axes, "results")
        return _png(figure)
    by_model: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for g in rows:
        by_model[f"{g.scanner} / {g.model}"].append((g.week, g.time_to_result_p50 or 0.0))
    for label, points in sorted(by_model.items()):
        axes.plot([w for w, _ in points], [p for _, p in points], "o-", label=label)
    axes.set_title("Median time from last image to result")
    axes.set_ylabel("seconds")
    axes.legend(fontsize=7)
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _png(figure)


PLOTS: dict[str, Callable[[MonitorReport, list[ScoredExam]], bytes]] = {
    "exams": exams_per_week,
    "scores": score_distribution,
    "recall": recall_rate,
    "drift": drift,
    "categories": category_drift,
    "time": time_to_result,
}
