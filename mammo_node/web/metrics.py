"""GET /metrics: Prometheus text exposition (no patient data in any label)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mammo_node.observe import metrics
from mammo_node.web.deps import context

router = APIRouter()


@router.get("/metrics")
def prometheus(request: Request) -> Response:
    return Response(metrics.exposition(context(request).db), media_type=metrics.CONTENT_TYPE)
