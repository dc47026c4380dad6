"""Prometheus metrics: event counters the services bump, and gauges read from the database.

Counters and histograms live in one process-wide registry (``REGISTRY``); the services call the
small functions below at the moment something happens (an instance filed, an exam scored, a
delivery failed). Gauges that describe the archive as a whole (exams by state, queue depths)
are read from the database at scrape time by :class:`DatabaseCollector`, so they are right
after a restart and when several processes share one database.

No label ever carries patient data: labels are sources, states, outcomes and destination names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from mammo_node.db.models import Exam, Instance, OutboxItem
from mammo_node.db.session import Database
from mammo_node.domain import ExamState
from mammo_node.errors import MammoNodeError

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES_RECEIVED = Counter(
    "mammo_instances_received",
    "Instances filed by the ingest path, by source (dimse, stow, node) and outcome "
    "(stored, duplicate, replaced)",
    ["source", "outcome"],
    registry=REGISTRY,
)
INSTANCES_REJECTED = Counter(
    "mammo_instances_rejected",
    "Instances refused by the ingest path, by source and reason (invalid, no_space, error)",
    ["source", "reason"],
    registry=REGISTRY,
)
SCORING_SECONDS = Histogram(
    "mammo_scoring_seconds",
    "Wall time to score one exam (load, preprocess, models, writers)",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
SCORING_FAILURES = Counter(
    "mammo_scoring_failures",
    "Exams whose scoring attempt failed (parked or to be retried)",
    registry=REGISTRY,
)
LAST_IMAGE_TO_RESULT_SECONDS = Histogram(
    "mammo_last_image_to_result_seconds",
    "Time from an exam's last received image to its stored result",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
OUTBOX_DELIVERIES = Counter(
    "mammo_outbox_deliveries",
    "Result objects delivered, by destination",
    ["destination"],
    registry=REGISTRY,
)
OUTBOX_FAILURES = Counter(
    "mammo_outbox_failures",
    "Failed delivery attempts, by destination (a retry that later succeeds counts here too)",
    ["destination"],
    registry=REGISTRY,
)
OUTBOX_IN_DOUBT = Counter(
    "mammo_outbox_in_doubt",
    "Objects in flight when an exporter ended, by destination and what the node did: "
    "confirmed (the peer's C-FIND found it, not resent) or resent (no query service or not held)",
    ["destination", "outcome"],
    registry=REGISTRY,
)
LOOP_FAILURES = Counter(
    "mammo_loop_failures",
    "Failed passes of a background loop (grouper, worker, exporter, audit), by exception type",
    ["loop", "error"],
    registry=REGISTRY,
)
PRUNED_INSTANCES = Counter(
    "mammo_pruned_instances",
    "Instances whose files retention deleted, by origin (received, generated)",
    ["origin"],
    registry=REGISTRY,
)
PRUNED_BYTES = Counter(
    "mammo_pruned_bytes",
    "Bytes retention freed, by origin (received, generated)",
    ["origin"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "mammo_http_requests",
    "HTTP requests answered, by route group (dicomweb, pages, api, ops) and status class",
    ["group", "status"],
    registry=REGISTRY,
)


# --- what the services call -----------------------------------------------------------------
def instance_received(source: str, outcome: str = "stored") -> None:
    """One instance filed by ``Ingestor.ingest_file`` (outcome: stored, duplicate, replaced)."""
    INSTANCES_RECEIVED.labels(source=source, outcome=outcome).inc()


def instance_rejected(source: str, reason: str) -> None:
    """One instance refused (reason: invalid, no_space, error)."""
    INSTANCES_REJECTED.labels(source=source, reason=reason).inc()


def exam_scored(seconds: float, last_image_to_result_seconds: float | None = None) -> None:
    """A result was stored: scoring wall time and, when known, time since the last image."""
    SCORING_SECONDS.observe(max(0.0, seconds))
    if last_image_to_result_seconds is not None:
        LAST_IMAGE_TO_RESULT_SECONDS.observe(max(0.0, last_image_to_result_seconds))


def scoring_failed() -> None:
    SCORING_FAILURES.inc()


def delivery_succeeded(destination: str, count: int = 1) -> None:
    OUTBOX_DELIVERIES.labels(destination=destination).inc(count)


def delivery_failed(destination: str, count: int = 1) -> None:
    OUTBOX_FAILURES.labels(destination=destination).inc(count)


def delivery_in_doubt(destination: str, *, confirmed: int, resent: int) -> None:
    if confirmed:
        OUTBOX_IN_DOUBT.labels(destination=destination, outcome="confirmed").inc(confirmed)
    if resent:
        OUTBOX_IN_DOUBT.labels(destination=destination, outcome="resent").inc(resent)


def loop_failed(loop: str, error: str) -> None:
    """A pass of a background loop raised ``error`` (an exception type name); it goes on."""
    LOOP_FAILURES.labels(loop=loop, error=error).inc()


def instances_pruned(count: int, size: int, origin: str) -> None:
    """Retention deleted ``count`` files of ``size`` bytes in all."""
    if count:
        PRUNED_INSTANCES.labels(origin=origin).inc(count)
        PRUNED_BYTES.labels(origin=origin).inc(size)


def http_request(group: str, status_code: int) -> None:
    HTTP_REQUESTS.labels(group=group, status=f"{status_code // 100}xx").inc()


# --- gauges read from the database ------------------------------------------------------------
class DatabaseCollector(Collector):
    """Exams by state, the scoring queue and the outbox, counted when Prometheus scrapes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        exams = GaugeMetricFamily("mammo_exams", "Exams by state", labels=["state"])
        queue = GaugeMetricFamily(
            "mammo_scoring_queue_depth", "Exams READY and waiting for a worker"
        )
        outbox = GaugeMetricFamily(
            "mammo_outbox_items",
            "Outbox rows by state (pending, delivered, dead)",
            labels=["state"],
        )
        stored = GaugeMetricFamily(
            "mammo_stored_bytes",
            "Bytes of instance files on record and not pruned, by origin (received, generated)",
            labels=["origin"],
        )
        up = GaugeMetricFamily("mammo_database_up", "1 when the database answered this scrape")
        try:
            with self.db.read() as session:
                by_state = dict(
                    session.execute(select(Exam.state, func.count()).group_by(Exam.state)).all()
                )
                by_outbox = dict(
                    session.execute(
                        select(OutboxItem.state, func.count()).group_by(OutboxItem.state)
                    ).all()
                )
                by_origin = dict(
                    session.execute(
                        select(Instance.origin, func.coalesce(func.sum(Instance.size_bytes), 0))
                        .where(Instance.pruned_at.is_(None))
                        .group_by(Instance.origin)
                    ).all()
                )
        except MammoNodeError:
            logger.warning("metrics: database not reachable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        for state in ExamState:
            exams.add_metric([state.value], by_state.pop(state.value, 0))
        for state, count in sorted(by_state.items()):  # states this version does not know
            exams.add_metric([state], count)
        queue.add_metric([], by_state_ready(exams))
        for state in (
            "pending",
            "delivered",
            "dead",
            *sorted(set(by_outbox) - {"pending", "delivered", "dead"}),
        ):
            outbox.add_metric([state], by_outbox.get(state, 0))
        for origin in ("received", "generated"):
            stored.add_metric([origin], float(by_origin.get(origin, 0)))
        up.add_metric([], 1)
        yield from (exams, queue, outbox, stored, up)


def by_state_ready(exams: GaugeMetricFamily) -> float:
    for sample in exams.samples:
        if sample.labels.get("state") == ExamState.READY.value:
            return sample.value
    return 0.0


def exposition(db: Database | None = None) -> bytes:
    """The text exposition of the process counters plus, with ``db``, the database gauges."""
    text = generate_latest(REGISTRY)
    if db is not None:
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(DatabaseCollector(db))
        text += generate_latest(scrape)
    return text
