"""JSON API for scripts and dashboards: the worklist and one exam, as the pages show them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mammo_node.observe import audit
from mammo_node.responses import ExamPage, WorklistRow
from mammo_node.web.deps import actor, client_host, context, require_read
from mammo_node.web.errors import WebError
from mammo_node.web.worklist import check_filters, exam_view, state_counts, worklist

router = APIRouter(prefix="/api")


@router.get("/exams", response_model=list[WorklistRow])
def list_exams(
    request: Request,
    state: str = "",
    sort: str = "newest",
    limit: int = 200,
    q: str = "",
    min_category: int | None = None,
) -> list[WorklistRow]:
    """Exams with their latest result (patient identifiers included: role read or admin);
    ``sort=category`` and ``min_category`` triage by the calibrated 1-10 scale."""
    require_read(request)
    check_filters(state, sort, min_category)
    if not 1 <= limit <= 5000:
        raise WebError(400, f"limit {limit}: expected 1..5000")
    return worklist(
        context(request).db,
        state=state or None,
        sort=sort,
        limit=limit,
        search=q.strip() or None,
        min_category=min_category,
    )


@router.get("/exams/{study_uid}", response_model=ExamPage)
def show_exam(request: Request, study_uid: str) -> ExamPage:
    """One exam: slots, images kept out and why, result, outputs, deliveries."""
    require_read(request)
    ctx = context(request)
    view = exam_view(ctx.db, ctx.headers, study_uid)
    ctx.audit.record(actor(request), audit.VIEWED, study_uid, page="api", peer=client_host(request))
    return view  # outputs' rel_path stays on the server (excluded from the model's JSON)


@router.get("/status")
def status(request: Request) -> dict[str, Any]:
    """Exams by state (no patient data; open like /metrics)."""
    return {"exams": state_counts(context(request).db)}
