"""The worklist, the exam page and the JSON API read here (answers: mammo_node.responses).

``worklist`` lists exams with their latest result; ``exam_view`` is one exam as the exam page
shows it: the four views in hanging order with their images, scores, ROIs and saliency
captures, what the node decided and why, and where the results went.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, joinedload

from mammo_node.db.models import Destination, Exam, ExamEvent, Instance, Patient, Result
from mammo_node.db.session import Database
from mammo_node.domain import ExamState, Origin
from mammo_node.exams import exam_in, find_exam, image_counts
from mammo_node.responses import (
    Delivery,
    DestinationDeliveries,
    ExamPage,
    NotScoredImage,
    OutputFile,
    ResultDetail,
    ViewCell,
    WorklistRow,
)
from mammo_node.web.dicomjson import HeaderCache, first_value
from mammo_node.web.errors import WebError

SORTS = ("newest", "risk", "category")
# screen order of the hanging protocol: R on the left, L on the right; CC on top, MLO below
HANGING_ORDER: tuple[str, ...] = ("R-CC", "L-CC", "R-MLO", "L-MLO")


def check_filters(state: str, sort: str, min_category: int | None = None) -> None:
    """400 for a state, sort order or category the worklist does not know."""
    if min_category is not None and not 1 <= min_category <= 10:
        raise WebError(400, f"min_category {min_category}: expected 1..10")
    states = [s.value for s in ExamState]
    if state and state not in states:
        raise WebError(400, f"state {state!r}: expected one of {', '.join(states)}")
    if sort not in SORTS:
        raise WebError(400, f"sort {sort!r}: expected one of {', '.join(SORTS)}")


def _filtered(query: Select[Any], state: str | None, search: str | None) -> Select[Any]:
    if state:
        query = query.where(Exam.state == state)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(
            or_(
                func.lower(Exam.patient_name).like(pattern),
                func.lower(Patient.patient_id).like(pattern),
                func.lower(Exam.accession_number).like(pattern),
                Exam.study_uid.like(f"{search}%"),
            )
        )
    return query


NEWEST_FIRST = (Exam.last_received_at.desc(), Exam.id.desc())
RISK_FIRST = (Exam.latest_exam_score.desc(), *NEWEST_FIRST)
CATEGORY_FIRST = (Exam.latest_category.desc(), *RISK_FIRST)
FEW_PAGES = 5  # min_category matching at most this many pages: read by category, sorted here


def _tiers(sort: str, min_category: int | None) -> list[tuple[Any, tuple[Any, ...]]]:
    """The page's order as (condition, order) tiers, each walked through an index
    (``ix_exams[_state]_triage_*`` or the received-time one) and read up to the page's end.
    Exams without a result (or a category) come after those with one."""
    scored, unscored = Exam.latest_exam_score.is_not(None), Exam.latest_exam_score.is_(None)
    if min_category is not None:  # triage: only exams whose latest result is that high
        at_least = Exam.latest_category >= min_category
        order = {"newest": NEWEST_FIRST, "risk": RISK_FIRST, "category": CATEGORY_FIRST}[sort]
        return [(at_least, order)]
    if sort == "risk":
        return [(scored, RISK_FIRST), (unscored, NEWEST_FIRST)]
    if sort == "category":  # the calibrated scale first, then the score within a category
        return [
            (Exam.latest_category.is_not(None), CATEGORY_FIRST),
            (scored & Exam.latest_category.is_(None), RISK_FIRST),
            (unscored, NEWEST_FIRST),
        ]
    return [(None, NEWEST_FIRST)]


def _few(session: Session, query: Select[Any], limit: int) -> bool:
    """Whether the exams ``query`` matches are at most a few pages (counted on the index of
    its condition, stopping past that)."""
    probe = query.with_only_columns(Exam.id).limit(FEW_PAGES * limit + 1).subquery()
    return int(session.scalar(select(func.count()).select_from(probe)) or 0) <= FEW_PAGES * limit


def _sort_key(exam: Exam, sort: str) -> tuple[Any, ...]:
    """The SQL orders of _tiers, for rows ordered in Python (descending)."""
    newest = (exam.last_received_at, exam.id)
    if sort == "newest":
        return newest
    score = exam.latest_exam_score if exam.latest_exam_score is not None else -math.inf
    if sort == "risk":
        return (score, *newest)
    return (exam.latest_category or 0, score, *newest)


def _page(
    session: Session,
    state: str | None,
    search: str | None,
    limit: int,
    sort: str,
    min_category: int | None,
) -> list[tuple[Exam, Patient, Result | None]]:
    """One page in the order asked for, in a query per tier (each stops at the page's end),
    then the listed exams' latest results by exam id: a fixed number of queries whatever the
    size of the database."""
    rows: list[tuple[Exam, Patient]] = []
    for condition, order in _tiers(sort, min_category):
        if len(rows) >= limit:
            break
        query = _filtered(
            select(Exam, Patient).join(Patient, Exam.patient_fk == Patient.id), state, search
        )
        if condition is not None:
            query = query.where(condition)
        if min_category is not None and _few(session, query, limit):
            # a rare category: walking the order's index would pass over every exam to find
            # them; read them through the category index and order them here
            found = [(e, p) for e, p in session.execute(query)]
            found.sort(key=lambda row: _sort_key(row[0], sort), reverse=True)
            rows += found[: limit - len(rows)]
            continue
        rows += [
            (e, p) for e, p in session.execute(query.order_by(*order).limit(limit - len(rows)))
        ]
    ids = [exam.id for exam, _ in rows]
    latest = select(func.max(Result.id)).where(Result.exam_fk.in_(ids)).group_by(Result.exam_fk)
    results = {r.exam_fk: r for r in session.scalars(select(Result).where(Result.id.in_(latest)))}
    return [(exam, patient, results.get(exam.id)) for exam, patient in rows]


def worklist(
    db: Database,
    *,
    state: str | None = None,
    sort: str = "newest",
    limit: int = 200,
    search: str | None = None,
    min_category: int | None = None,
) -> list[WorklistRow]:
    """Exams with their latest result: newest first, highest exam score first or highest
    category first; ``min_category`` keeps exams whose latest result is at least that."""
    if sort not in SORTS:
        raise ValueError(f'Argument "sort" should be one of {SORTS}, got {sort!r}.')
    if min_category is not None and not 1 <= min_category <= 10:
        raise ValueError(f'Argument "min_category" should be 1..10, got {min_category!r}.')
    with db.read() as session:
        rows = _page(session, state, search, limit, sort, min_category)
        counts = image_counts(session, [exam.id for exam, _, _ in rows])
        return [
            WorklistRow.of_row(exam, counts.get(exam.id, 0), patient, result)
            for exam, patient, result in rows
        ]


# per database: the marker the counts were made under, when, and the counts
_COUNTED: dict[str, tuple[tuple[int | None, int | None], float, dict[str, int]]] = {}
_COUNTED_LOCK = threading.Lock()
#: counts are made again at least this often: ids are not handed out in commit order on
#: PostgreSQL, so an exam event committed late can hide behind a newer one for this long
RECOUNT_SECONDS = 10.0


def state_counts(db: Database) -> dict[str, int]:
    """Exams per state (the worklist's chips). Every page used to count the whole table; an
    exam is only ever added (a new exam id) or moved by ``repo.set_exam_state`` (a new exam
    event), so the counts are made again only when one of the two newest ids changed (or
    after RECOUNT_SECONDS): two primary-key lookups otherwise."""
    with db.read() as session:
        newest_exam, newest_event = session.execute(
            select(
                select(func.max(Exam.id)).scalar_subquery(),
                select(func.max(ExamEvent.id)).scalar_subquery(),
            )
        ).one()
        marker = (newest_exam, newest_event)
        with _COUNTED_LOCK:
            cached = _COUNTED.get(db.url)
        now = time.monotonic()
        if cached is not None and cached[0] == marker and now - cached[1] < RECOUNT_SECONDS:
            return dict(cached[2])
        found = dict(session.execute(select(Exam.state, func.count()).group_by(Exam.state)).all())
    counts = {state.value: int(found.get(state.value, 0)) for state in ExamState}
    with _COUNTED_LOCK:  # counted after the marker was read: never older than it says
        _COUNTED[db.url] = (marker, now, counts)
    return dict(counts)


# --- one exam ---------------------------------------------------------------------------------
def exam_view(db: Database, headers: HeaderCache, study_uid: str) -> ExamPage:
    """Everything the exam page shows; raises NotFoundError."""
    with db.read() as session:
        exam = find_exam(session, study_uid)
        detail = exam_in(session, exam)
        received = {
            i.sop_instance_uid: {
                "slot": i.slot,
                "origin": i.origin,
                "rows": i.rows,
                "columns": i.columns,
            }
            for i in session.scalars(select(Instance).where(Instance.exam_fk == exam.id))
        }
        outputs = _outputs(session, detail.result.id) if detail.result else []
        deliveries = _by_destination(session, detail.result) if detail.result else []
        view = ExamPage(
            **dict(detail),  # includes the exam's own woman (PatientInfo)
            study_description=exam.study_description,
            study_time=exam.study_time,
            outputs=outputs,
            deliveries=deliveries,
        )
    selected = dict((view.result.selection or {}).get("slots", {})) if view.result else {}
    sc_for = _saliency_captures(headers, outputs, selected)
    seg_for = _segmentations(headers, outputs, selected)
    scores = view.result.images if view.result else {}
    kept_out = {n.sop_instance_uid: n for n in detail.not_scored}
    for slot in HANGING_ORDER:
        uid = detail.slots.get(slot)
        cell = ViewCell(slot=slot, sop_instance_uid=uid)
        if uid is None:
            cell.why_empty = _why_missing(slot, kept_out, received)
        else:
            instance = received.get(uid, {})
            cell.rows = instance.get("rows")
            cell.columns = instance.get("columns")
            cell.score = scores.get(uid)
            cell.sc_sop_instance_uid = sc_for.get(uid)
            cell.seg_sop_instance_uid = seg_for.get(uid)
        view.views.append(cell)
    return view


def _why_missing(
    slot: str,
    kept_out: dict[str, NotScoredImage],
    received: dict[str, dict[str, Any]],
) -> str:
    candidates = [
        kept_out[uid]
        for uid, row in received.items()
        if row["slot"] == slot and uid in kept_out and row["origin"] == Origin.RECEIVED.value
    ]
    if candidates:
        reasons = sorted({f"{c.reason}: {c.detail}" for c in candidates})
        return "image kept out - " + "; ".join(reasons)
    return "no image received for this view"


def _outputs(session: Session, result_id: int) -> list[OutputFile]:
    query = (
        select(Instance)
        .where(Instance.result_fk == result_id)
        .order_by(Instance.id)
        .options(joinedload(Instance.series))  # one query, not one per output for its series
    )
    return [OutputFile.of(instance) for instance in session.scalars(query)]


def _by_slot(outputs: list[OutputFile], kind: str, selected: dict[str, str]) -> dict[str, str]:
    """source SOP Instance UID -> the output of ``kind`` made for its view: the output's slot
    and the image the result scored in that slot (both rows), no file read."""
    return {
        selected[o.slot]: o.sop_instance_uid
        for o in outputs
        if o.kind == kind and o.slot and o.slot in selected
    }


def _saliency_captures(
    headers: HeaderCache, outputs: list[OutputFile], selected: dict[str, str]
) -> dict[str, str]:
    """source SOP Instance UID -> its Secondary Capture: from the rows, else (an output
    without a slot) from the SC's SourceImageSequence."""
    found = _by_slot(outputs, "sc", selected)
    for output in outputs:
        if output.kind != "sc" or (output.slot and output.slot in selected):
            continue
        header = headers.get(output.rel_path)
        for item in header.get("00082112", {}).get("Value", []) or []:
            source = first_value(item, "00081155")
            if source:
                found[str(source)] = output.sop_instance_uid
    return found


def _segmentations(
    headers: HeaderCache, outputs: list[OutputFile], selected: dict[str, str]
) -> dict[str, str]:
    """source SOP Instance UID -> its SEG: from the rows, else from the SEG's
    ReferencedSeriesSequence > instances."""
    found = _by_slot(outputs, "seg", selected)
    for output in outputs:
        if output.kind != "seg" or (output.slot and output.slot in selected):
            continue
        header = headers.get(output.rel_path)
        for series in header.get("00081115", {}).get("Value", []) or []:
            for item in series.get("0008114A", {}).get("Value", []) or []:
                source = first_value(item, "00081155")
                if source:
                    found[str(source)] = output.sop_instance_uid
    return found


def _by_destination(session: Session, result: ResultDetail) -> list[DestinationDeliveries]:
    """Per destination (by name): this result's outbox rows, their states, the latest error."""
    rows: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in result.deliveries:
        rows[delivery.destination].append(delivery)
    destinations = session.scalars(select(Destination).where(Destination.name.in_(list(rows))))
    return [
        DestinationDeliveries.of(d, rows[d.name])
        for d in sorted(destinations, key=lambda d: d.name)
    ]
