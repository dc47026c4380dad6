"""How the deployed model behaves over time: per week, per scanner, per model version.

The site monitoring that commercial readers publish, from the node's own rows: exams scored,
the score distribution, the recall rate at each operating point, time to result, failures,
and a drift signal — the population stability index (PSI, with the two-sample KS statistic
beside it) of each week's exam scores against a reference population: the bundle's
calibration population when its manifest carries one, else the model version's own first
``drift_reference_weeks`` weeks. A PSI above ``drift_psi_threshold`` raises the alert metric
``mammo_monitor_drift_alert``. The 1-10 categories of a calibrated bundle drift on their own
signal: the PSI of each week's category shares against the calibration population's (10 % in
each: the categories are its deciles), alert metric ``mammo_monitor_category_drift_alert``.
With outcomes imported (``mammo-node outcomes import``), sensitivity and PPV per model version
and operating point.

Everything here is computed from the database when asked (a page view, a scrape), so it is
right after a restart and when several nodes share one database. No patient data: the
groups are weeks, scanner makes and models, and model versions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from mammo_node.config import Settings
from mammo_node.db.models import Exam, ExamEvent, Outcome, Result, utcnow
from mammo_node.db.session import Database
from mammo_node.domain import ExamState
from mammo_node.errors import MammoNodeError

logger = logging.getLogger(__name__)

PSI_BINS = 10
CATEGORIES = 10  # the 1-10 scale: deciles of the calibration's screening population
_EPS = 1e-4


@dataclass(frozen=True)
class ScoredExam:
    """One current result, reduced to what monitoring groups and counts."""

    week: str  # ISO week of the result, "2026-W48"
    at: dt.datetime
    scanner: str  # "Manufacturer ManufacturerModelName" or "unknown"
    model: str  # "name version"
    score: float
    verdicts: dict[str, bool]
    seconds_to_result: float | None
    outcome: str | None = None  # screening, interval, normal (imported later)
    category: int | None = None  # 1-10 from the bundle's calibration (None: uncalibrated)


@dataclass
class GroupStats:
    week: str
    scanner: str
    model: str
    exams: int
    score_p10: float
    score_p50: float
    score_p90: float
    recall_rate: dict[str, float]
    time_to_result_p50: float | None
    time_to_result_p90: float | None


@dataclass
class Drift:
    week: str
    model: str
    exams: int
    psi: float | None
    ks: float | None
    alert: bool
    reference: str  # "calibration population (N)" or "first K weeks (N)"


@dataclass
class CategoryDrift:
    """A week's 1-10 categories against the reference population's category frequencies."""

    week: str
    model: str
    exams: int  # exams of the week with a category
    psi: float | None
    alert: bool
    reference: str  # "calibration population (deciles)" or "first K weeks (N)"
    shares: list[float]  # the week's share of exams in categories 1..10
    expected: list[float]  # the reference's shares


@dataclass
class OutcomeStats:
    model: str
    operating_point: str
    exams_with_outcome: int
    screening_cancers: int
    interval_cancers: int
    recalled: int
    true_positives: int
    sensitivity: float | None  # recalled screening cancers / screening cancers
    ppv: float | None  # recalled screening cancers / recalled
    interval_recalled: int


@dataclass
class ShadowComparison:
    """A shadow bundle against the active one, on the same exams."""

    active: str
    shadow: str
    exams: int
    mean_difference: float  # shadow - active
    mean_abs_difference: float
    correlation: float | None  # Pearson, of the exam scores
    verdict_agreement: dict[str, float]  # operating point -> share of exams with the same call
    failed: int = 0  # exams the shadow could not score (its process died or scoring raised)


@dataclass
class MonitorReport:
    weeks: list[str]
    groups: list[GroupStats]
    failures: dict[str, int]  # week -> exams parked as failed
    drift: list[Drift]
    outcomes: list[OutcomeStats]
    threshold: float
    operating_points: list[str] = field(default_factory=list)
    shadow: list[ShadowComparison] = field(default_factory=list)
    category_drift: list[CategoryDrift] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "weeks": self.weeks,
            "groups": [asdict(g) for g in self.groups],
            "failures": self.failures,
            "drift": [asdict(d) for d in self.drift],
            "outcomes": [asdict(o) for o in self.outcomes],
            "drift_psi_threshold": self.threshold,
            "operating_points": self.operating_points,
            "shadow": [asdict(c) for c in self.shadow],
            "category_drift": [asdict(c) for c in self.category_drift],
        }


# --- statistics (pure) ----------------------------------------------------------------------------
def iso_week(when: dt.datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def psi(reference: Sequence[float], current: Sequence[float], bins: int = PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference`` (bins at the
    reference's quantiles). <0.1 stable, 0.1-0.25 moderate shift, >0.25 a real shift."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs scores in both populations")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    e = np.clip(expected / ref.size, _EPS, None)
    a = np.clip(actual / cur.size, _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical
    distribution functions (numpy only: no scipy import on a Prometheus scrape)."""
    a = np.sort(np.asarray(reference, dtype=float))
    b = np.sort(np.asarray(current, dtype=float))
    pooled = np.concatenate([a, b])
    gap = (
        np.searchsorted(a, pooled, side="right") / a.size
        - np.searchsorted(b, pooled, side="right") / b.size
    )
    return float(np.max(np.abs(gap)))


def category_shares(categories: Sequence[int]) -> list[float]:
    """Share of ``categories`` (1-10) in each category, 1 first."""
    values = np.asarray(categories, dtype=int)
    if values.size == 0:
        raise ValueError("category shares need at least one exam")
    if values.min() < 1 or values.max() > CATEGORIES:
        raise ValueError(f"categories should be 1-{CATEGORIES}, got {sorted(set(values))}")
    counts = np.bincount(values - 1, minlength=CATEGORIES)
    return [float(c) for c in counts / values.size]


def category_psi(expected: Sequence[float], categories: Sequence[int]) -> float:
    """PSI of the 1-10 ``categories`` of a week against the ``expected`` category shares: the
    categories are the bins (no quantiles to pick), so a shift of exams between categories is
    seen even where the raw score drift hides it in the tails."""
    e = np.asarray(expected, dtype=float)
    if e.shape != (CATEGORIES,) or e.sum() <= 0:
        raise ValueError(f"expected shares should be {CATEGORIES} non-negative values")
    a = np.clip(np.asarray(category_shares(categories)), _EPS, None)
    e = np.clip(e / e.sum(), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), q))


def group_stats(exams: Iterable[ScoredExam], points: Sequence[str]) -> list[GroupStats]:
    groups: dict[tuple[str, str, str], list[ScoredExam]] = defaultdict(list)
    for exam in exams:
        groups[(exam.week, exam.scanner, exam.model)].append(exam)
    rows = []
    for (week, scanner, model), members in sorted(groups.items()):
        scores = [m.score for m in members]
        times = [m.seconds_to_result for m in members if m.seconds_to_result is not None]
        rows.append(
            GroupStats(
                week=week,
                scanner=scanner,
                model=model,
                exams=len(members),
                score_p10=_quantile(scores, 0.1),
                score_p50=_quantile(scores, 0.5),
                score_p90=_quantile(scores, 0.9),
                recall_rate={
                    p: sum(bool(m.verdicts.get(p)) for m in members) / len(members) for p in points
                },
                time_to_result_p50=_quantile(times, 0.5) if times else None,
                time_to_result_p90=_quantile(times, 0.9) if times else None,
            )
        )
    return rows


def drift_by_week(
    exams: Sequence[ScoredExam],
    *,
    threshold: float,
    min_exams: int,
    reference_weeks: int,
    calibration: dict[str, list[float]],
) -> list[Drift]:
    """Per model version and week: PSI and KS against the reference population."""
    by_model: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for exam in exams:
        by_model[exam.model][exam.week].append(exam.score)
    rows = []
    for model, weeks in sorted(by_model.items()):
        ordered = sorted(weeks)
        if model in calibration:
            reference = calibration[model]
            label = f"calibration population ({len(reference)})"
            first = set()
        else:
            first = set(ordered[:reference_weeks])
            reference = [s for w in first for s in weeks[w]]
            label = f"first {len(first)} week(s) ({len(reference)})"
        for week in ordered:
            scores = weeks[week]
            value = ks = None
            if week not in first and len(scores) >= min_exams and len(reference) >= min_exams:
                value = psi(reference, scores)
                ks = ks_statistic(reference, scores)
            alert = value is not None and value > threshold
            rows.append(Drift(week, model, len(scores), value, ks, alert, label))
    return rows


def category_drift_by_week(
    exams: Sequence[ScoredExam],
    *,
    threshold: float,
    min_exams: int,
    reference_weeks: int,
    calibration: dict[str, tuple[list[float], str]],
) -> list[CategoryDrift]:
    """Per model version and week: PSI of the 1-10 categories against the calibration
    population's category shares, else against the model's own first weeks."""
    by_model: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for exam in exams:
        if exam.category is not None and 1 <= exam.category <= CATEGORIES:
            by_model[exam.model][exam.week].append(exam.category)
    rows = []
    for model, weeks in sorted(by_model.items()):
        ordered = sorted(weeks)
        first: set[str] = set()
        if model in calibration:
            expected, label = calibration[model]
            enough = True
        else:
            first = set(ordered[:reference_weeks])
            pooled = [c for w in first for c in weeks[w]]
            expected = category_shares(pooled)
            label = f"first {len(first)} week(s) ({len(pooled)})"
            enough = len(pooled) >= min_exams
        for week in ordered:
            categories = weeks[week]
            value = None
            if week not in first and enough and len(categories) >= min_exams:
                value = category_psi(expected, categories)
            rows.append(
                CategoryDrift(
                    week=week,
                    model=model,
                    exams=len(categories),
                    psi=value,
                    alert=value is not None and value > threshold,
                    reference=label,
                    shares=category_shares(categories),
                    expected=list(expected),
                )
            )
    return rows


def outcome_stats(exams: Iterable[ScoredExam], points: Sequence[str]) -> list[OutcomeStats]:
    by_model: dict[str, list[ScoredExam]] = defaultdict(list)
    for exam in exams:
        if exam.outcome:
            by_model[exam.model].append(exam)
    rows = []
    for model, members in sorted(by_model.items()):
        screening = [m for m in members if m.outcome == "screening"]
        interval = [m for m in members if m.outcome == "interval"]
        for point in points:
            recalled = [m for m in members if m.verdicts.get(point)]
            tp = sum(1 for m in recalled if m.outcome == "screening")
            rows.append(
                OutcomeStats(
                    model=model,
                    operating_point=point,
                    exams_with_outcome=len(members),
                    screening_cancers=len(screening),
                    interval_cancers=len(interval),
                    recalled=len(recalled),
                    true_positives=tp,
                    sensitivity=tp / len(screening) if screening else None,
                    ppv=tp / len(recalled) if recalled else None,
                    interval_recalled=sum(1 for m in recalled if m.outcome == "interval"),
                )
            )
    return rows


# --- from the database ------------------------------------------------------------------------
def load_scored(db: Database, since: dt.datetime | None = None) -> list[ScoredExam]:
    """The current result of every scored exam (results of superseded revisions left out)."""
    query = (
        select(
            Result.created_at,
            Result.manufacturer,
            Result.manufacturer_model,
            Result.model_name,
            Result.model_version,
            Result.exam_score,
            Result.verdicts,
            Exam.last_received_at,
            Outcome.outcome,
            Result.category,
        )
        .join(Exam, Result.exam_fk == Exam.id)
        .outerjoin(Outcome, Outcome.exam_fk == Exam.id)
        .where(Result.exam_revision == Exam.revision, Result.sr_sop_instance_uid != "")
        .order_by(Result.created_at)
    )
    if since is not None:
        query = query.where(Result.created_at >= since)
    out = []
    with db.read() as session:
        for (
            created,
            maker,
            model,
            name,
            version,
            score,
            verdicts,
            last,
            outcome,
            category,
        ) in session.execute(query):
            if score is None or not math.isfinite(score):
                continue
            scanner = " ".join(p for p in (maker, model) if p) or "unknown"
            seconds = (created - last).total_seconds() if last is not None else None
            out.append(
                ScoredExam(
                    week=iso_week(created),
                    at=created,
                    scanner=scanner,
                    model=f"{name} {version}",
                    score=float(score),
                    verdicts=dict(verdicts or {}),
                    seconds_to_result=max(0.0, seconds) if seconds is not None else None,
                    outcome=outcome,
                    category=category,
                )
            )
    return out


def failures_by_week(db: Database, since: dt.datetime | None = None) -> dict[str, int]:
    query = select(ExamEvent.at).where(ExamEvent.to_state == ExamState.FAILED.value)
    if since is not None:
        query = query.where(ExamEvent.at >= since)
    counts: dict[str, int] = defaultdict(int)
    with db.read() as session:
        for (at,) in session.execute(query):
            counts[iso_week(at)] += 1
    return dict(sorted(counts.items()))


def _manifest_calibration(bundle_dir: Path | None) -> tuple[str, dict[str, Any]] | None:
    """("name version", the manifest's calibration) of a bundle, reading manifest.json only:
    importing the model code (torch) on a scrape would cost seconds."""
    import mammo_node

    path = (bundle_dir or Path(mammo_node.__file__).parent / "demo_bundle") / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    calibration = manifest.get("calibration") or manifest.get("training", {}).get("calibration")
    if not isinstance(calibration, dict):
        return None
    return f"{manifest.get('name')} {manifest.get('version')}", calibration


def _population_scores(calibration: dict[str, Any]) -> list[float]:
    scores = calibration.get("exam_scores") or calibration.get("scores")
    if not isinstance(scores, list) or not scores:
        return []
    try:
        return [float(s) for s in scores]
    except (TypeError, ValueError):
        return []


def calibration_population(bundle_dir: Path | None) -> dict[str, list[float]]:
    """Exam scores of the bundle's calibration population, keyed "name version", when the
    manifest carries them (``calibration.exam_scores`` or ``calibration.scores``)."""
    found = _manifest_calibration(bundle_dir)
    if found is None:
        return {}
    model, calibration = found
    values = _population_scores(calibration)
    return {model: values} if values else {}


def calibration_categories(bundle_dir: Path | None) -> dict[str, tuple[list[float], str]]:
    """The category shares of the bundle's calibration population, keyed "name version":
    the categories' edges are that population's deciles, so each holds 10 % of it (the
    calibration's screening population at its prevalence); when the manifest carries the
    population's exam scores, their own shares. Empty for a bundle without a category scale."""
    found = _manifest_calibration(bundle_dir)
    if found is None:
        return {}
    model, calibration = found
    edges = calibration.get("category_edges")
    if not isinstance(edges, list) or len(edges) != CATEGORIES - 1:
        return {}
    try:
        cuts = sorted(float(e) for e in edges)
    except (TypeError, ValueError):
        return {}
    scores = _population_scores(calibration)
    if scores:
        categories = [1 + int(np.searchsorted(cuts, s, side="right")) for s in scores]
        return {model: (category_shares(categories), f"calibration population ({len(scores)})")}
    return {model: ([1 / CATEGORIES] * CATEGORIES, "calibration population (deciles)")}


def shadow_comparisons(db: Database, since: dt.datetime | None = None) -> list[ShadowComparison]:
    from mammo_node.db.models import ShadowResult

    query = select(
        Result.model_name,
        Result.model_version,
        Result.exam_score,
        Result.verdicts,
        ShadowResult.model_name,
        ShadowResult.model_version,
        ShadowResult.exam_score,
        ShadowResult.verdicts,
        ShadowResult.failure,
    ).join(Result, ShadowResult.active_result_fk == Result.id)
    if since is not None:
        query = query.where(ShadowResult.created_at >= since)
    pairs: dict[tuple[str, str], list[tuple[float, float, dict[str, Any], dict[str, Any]]]] = (
        defaultdict(list)
    )
    failed: dict[tuple[str, str], int] = defaultdict(int)
    with db.read() as session:
        for (
            a_name,
            a_version,
            a_score,
            a_calls,
            s_name,
            s_version,
            s_score,
            s_calls,
            failure,
        ) in session.execute(query):
            key = (f"{a_name} {a_version}", f"{s_name} {s_version}")
            if failure is not None or s_score is None:
                failed[key] += 1
                continue
            pairs[key].append(
                (float(a_score), float(s_score), dict(a_calls or {}), dict(s_calls or {}))
            )
    out = []
    for active, shadow in sorted(set(pairs) | set(failed)):
        rows = pairs.get((active, shadow), [])
        a = np.array([r[0] for r in rows])
        b = np.array([r[1] for r in rows])
        correlation = None
        if len(rows) >= 3 and a.std() > 0 and b.std() > 0:
            correlation = float(np.corrcoef(a, b)[0, 1])
        points = sorted(set(rows[0][2]) & set(rows[0][3])) if rows else []
        out.append(
            ShadowComparison(
                active=active,
                shadow=shadow,
                exams=len(rows),
                mean_difference=float(np.mean(b - a)) if rows else 0.0,
                mean_abs_difference=float(np.mean(np.abs(b - a))) if rows else 0.0,
                correlation=correlation,
                verdict_agreement={
                    p: sum(bool(r[2].get(p)) == bool(r[3].get(p)) for r in rows) / len(rows)
                    for p in points
                },
                failed=failed.get((active, shadow), 0),
            )
        )
    return out


def _active_bundle_dir(settings: Settings, db: Database) -> Path | None:
    """The registry's active bundle (``mammo-node models activate``), else the configured one."""
    from mammo_node.operations.models import ModelRole, bundle_with_role

    try:
        active = bundle_with_role(db, ModelRole.ACTIVE)
    except MammoNodeError:
        active = None
    return active[0] if active is not None else settings.model_bundle


def operating_points(exams: Iterable[ScoredExam]) -> list[str]:
    return sorted({name for exam in exams for name in exam.verdicts})


def monitor_report(
    settings: Settings,
    db: Database,
    now: dt.datetime | None = None,
    exams: list[ScoredExam] | None = None,
) -> MonitorReport:
    now = now or utcnow()
    since = now - dt.timedelta(weeks=settings.monitor_weeks)
    if exams is None:
        exams = load_scored(db, since)
    points = operating_points(exams)
    weeks = sorted({e.week for e in exams})
    bundle_dir = _active_bundle_dir(settings, db)
    return MonitorReport(
        weeks=weeks,
        groups=group_stats(exams, points),
        failures=failures_by_week(db, since),
        drift=drift_by_week(
            exams,
            threshold=settings.drift_psi_threshold,
            min_exams=settings.drift_min_exams,
            reference_weeks=settings.drift_reference_weeks,
            calibration=calibration_population(bundle_dir),
        ),
        outcomes=outcome_stats(load_scored(db), points),
        threshold=settings.drift_psi_threshold,
        operating_points=points,
        shadow=shadow_comparisons(db, since),
        category_drift=category_drift_by_week(
            exams,
            threshold=settings.drift_psi_threshold,
            min_exams=settings.drift_min_exams,
            reference_weeks=settings.drift_reference_weeks,
            calibration=calibration_categories(bundle_dir),
        ),
    )


_CACHE_LOCK = threading.Lock()
_CACHE: dict[int, tuple[float, MonitorReport, list[ScoredExam]]] = {}


def cached_report(
    settings: Settings, db: Database, max_age: float = 15.0
) -> tuple[MonitorReport, list[ScoredExam]]:
    """The report and its exams, computed at most every ``max_age`` seconds per database:
    a page with five plots and a Prometheus scrape every 15 s share one computation."""
    key = id(db)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and time.monotonic() - hit[0] < max_age:
            return hit[1], hit[2]
        now = utcnow()
        exams = load_scored(db, now - dt.timedelta(weeks=settings.monitor_weeks))
        report = monitor_report(settings, db, now, exams)
        _CACHE[key] = (time.monotonic(), report, exams)
        return report, exams


# --- Prometheus ---------------------------------------------------------------------------------
class MonitorCollector(Collector):
    """The last 7 days per scanner and model version, and drift of the latest week."""

    def __init__(self, settings: Settings, db: Database, store_root: Path | None = None) -> None:
        self.settings = settings
        self.db = db
        self.store_root = store_root

    def collect(self) -> Iterator[Metric]:
        labels = ["scanner", "model"]
        scored = GaugeMetricFamily(
            "mammo_monitor_exams_scored", "Exams scored in the last 7 days", labels=labels
        )
        score = GaugeMetricFamily(
            "mammo_monitor_exam_score",
            "Exam score quantiles over the last 7 days",
            labels=[*labels, "quantile"],
        )
        recall = GaugeMetricFamily(
            "mammo_monitor_recall_rate",
            "Share of exams at or above an operating point's threshold, last 7 days",
            labels=[*labels, "operating_point"],
        )
        seconds = GaugeMetricFamily(
            "mammo_monitor_time_to_result_seconds",
            "Last image to stored result, quantiles over the last 7 days",
            labels=[*labels, "quantile"],
        )
        failures = GaugeMetricFamily(
            "mammo_monitor_exams_failed", "Exams parked as failed in the last 7 days"
        )
        drift = GaugeMetricFamily(
            "mammo_monitor_drift_psi",
            "PSI of the latest week's exam scores against the reference population",
            labels=["model"],
        )
        alert = GaugeMetricFamily(
            "mammo_monitor_drift_alert",
            "1 when the latest week's PSI is above drift_psi_threshold",
            labels=["model"],
        )
        category_drift = GaugeMetricFamily(
            "mammo_monitor_category_drift_psi",
            "PSI of the latest week's 1-10 categories against the calibration population's",
            labels=["model"],
        )
        category_alert = GaugeMetricFamily(
            "mammo_monitor_category_drift_alert",
            "1 when the latest week's category PSI is above drift_psi_threshold",
            labels=["model"],
        )
        free = GaugeMetricFamily(
            "mammo_storage_free_bytes", "Free bytes on the instance store's filesystem"
        )
        now = utcnow()
        try:
            report, exams = cached_report(self.settings, self.db)
            week = [e for e in exams if e.at >= now - dt.timedelta(days=7)]
            failed = failures_by_week(self.db, now - dt.timedelta(days=7))
        except MammoNodeError:
            logger.warning("monitor metrics: database not reachable", exc_info=True)
            return
        groups: dict[tuple[str, str], list[ScoredExam]] = defaultdict(list)
        for exam in week:
            groups[(exam.scanner, exam.model)].append(exam)
        for (scanner, model), members in sorted(groups.items()):
            key = [scanner, model]
            scored.add_metric(key, len(members))
            values = [m.score for m in members]
            for q in (0.1, 0.5, 0.9):
                score.add_metric([*key, str(q)], _quantile(values, q))
            for point in report.operating_points:
                rate = sum(bool(m.verdicts.get(point)) for m in members) / len(members)
                recall.add_metric([*key, point], rate)
            times = [m.seconds_to_result for m in members if m.seconds_to_result is not None]
            for q in (0.5, 0.9):
                if times:
                    seconds.add_metric([*key, str(q)], _quantile(times, q))
        failures.add_metric([], sum(failed.values()))
        latest: dict[str, Drift] = {}
        for row in report.drift:
            if row.psi is not None:
                latest[row.model] = row  # rows are in week order
        for model, row in sorted(latest.items()):
            drift.add_metric([model], row.psi or 0.0)
            alert.add_metric([model], 1.0 if row.alert else 0.0)
        latest_categories: dict[str, CategoryDrift] = {}
        for category_row in report.category_drift:
            if category_row.psi is not None:
                latest_categories[category_row.model] = category_row
        for model, category_row in sorted(latest_categories.items()):
            category_drift.add_metric([model], category_row.psi or 0.0)
            category_alert.add_metric([model], 1.0 if category_row.alert else 0.0)
        metrics: list[Metric] = [scored, score, recall, seconds, failures, drift, alert]
        metrics += [category_drift, category_alert]
        if self.store_root is not None:
            import os

            try:
                stat = os.statvfs(self.store_root)
                free.add_metric([], stat.f_bavail * stat.f_frsize)
                metrics.append(free)
            except OSError:
                logger.warning("cannot stat the instance store %s", self.store_root)
        yield from metrics


def exposition(settings: Settings, db: Database, store_root: Path | None = None) -> bytes:
    """The monitor gauges in Prometheus text format (appended to /metrics)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(settings, db, store_root))
    return generate_latest(registry)
