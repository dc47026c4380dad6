"""Liveness and readiness: /healthz says the process answers, /readyz that it can do its work."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mammo_node.errors import MammoNodeError
from mammo_node.web.deps import WebContext, context

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database(ctx: WebContext) -> tuple[bool, str]:
    try:
        with ctx.db.read() as session:
            session.execute(text("SELECT 1"))
    except MammoNodeError as exc:
        return False, str(exc)[:300]
    return True, f"{ctx.db.dialect} reachable"


def _storage(ctx: WebContext) -> tuple[bool, str]:
    try:
        free_mb = ctx.ingestor.store.free_bytes() / 2**20
    except OSError as exc:
        return False, f"cannot stat the instance store: {exc}"
    needed = ctx.settings.min_free_disk_mb
    verdict = "at least" if free_mb >= needed else "below"
    return free_mb >= needed, f"{free_mb:.0f} MB free, {verdict} min_free_disk_mb={needed}"


def _model(ctx: WebContext) -> tuple[bool, str]:
    if ctx.model_ready is None:
        return True, "no scoring worker in this process"
    try:
        return ctx.model_ready()
    except MammoNodeError as exc:
        return False, str(exc)[:300]


def _loops(ctx: WebContext) -> tuple[bool, str]:
    return ctx.loops.readiness()


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    ctx = context(request)
    checks: dict[str, Any] = {}
    for name, check in (
        ("database", _database),
        ("storage", _storage),
        ("model", _model),
        ("loops", _loops),
    ):
        ok, detail = check(ctx)
        checks[name] = {"ok": ok, "detail": detail}
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
