"""GET /metrics: Prometheus text exposition (no patient data in any label)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mammo_node.observe import metrics, monitor
from mammo_node.web.deps import context

router = APIRouter()


@router.get("/metrics")
def prometheus(request: Request) -> Response:
    ctx = context(request)
    text = metrics.exposition(ctx.db)
    text += monitor.exposition(ctx.settings, ctx.db, ctx.ingestor.store.root)
    return Response(text, media_type=metrics.CONTENT_TYPE)
