"""Server-rendered pages: the worklist, the exam page, sign-in. No JavaScript framework.

Exams, their patient identifiers, scores, verdicts, reasons and images are shown only to
signed-in users (a token of role read or admin, or a local request when
``loopback_without_token`` is on); anyone else is sent to the sign-in page. With
``anonymous_view`` the worklist shows the counts per state to anyone (an operator's wall
screen), nothing more.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from mammo_node.domain import ExamState
from mammo_node.errors import PixelDataError
from mammo_node.observe import audit
from mammo_node.responses import ViewCell
from mammo_node.web.auth import SESSION_COOKIE, Principal
from mammo_node.web.deps import actor, client_host, context, current_principal
from mammo_node.web.errors import WebError
from mammo_node.web.worklist import check_filters, exam_view, state_counts, worklist

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
PAGE_HEADERS = {"Cache-Control": "no-store"}
SLOT_NAMES = {"R-CC": "R CC", "L-CC": "L CC", "R-MLO": "R MLO", "L-MLO": "L MLO"}


# --- formatting filters -----------------------------------------------------------------------
def _ago(value: str | None) -> str:
    if not value:
        return "-"
    seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(value)).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return dt.datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{seconds / 3600:.1f} h"


def _score(value: float | None, kind: str = "logit_difference") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "probability":
        return f"{100.0 * value:.1f} %"
    return f"{value:+.2f}"


def _date(value: str | None) -> str:
    if not value or len(value) != 8:
        return value or "-"
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


TEMPLATES.env.filters.update(ago=_ago, when=_when, duration=_duration, score=_score, date=_date)


def _page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    principal = current_principal(request)
    values.update(request=request, principal=principal, signed_in=principal is not None)
    return TEMPLATES.TemplateResponse(
        request, name, values, status_code=status, headers=PAGE_HEADERS
    )


# --- worklist ---------------------------------------------------------------------------------
def _to_login(request: Request) -> Response:
    """Pages show patient data, scores, verdicts and errors only after sign-in."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


@router.get("/", response_class=HTMLResponse, response_model=None)
def worklist_page(
    request: Request,
    state: str = "",
    sort: str = "newest",
    q: str = "",
    refresh: int = 30,
    min_category: int | None = None,
) -> Response:
    ctx = context(request)
    principal = current_principal(request)
    check_filters(state, sort, min_category)
    if principal is None and not ctx.settings.anonymous_view:
        return _to_login(request)
    search = q.strip() if principal else ""  # searching by name would reveal identifiers
    # anonymous_view: the counts per state only (no exams, scores, verdicts or reasons)
    rows = (
        worklist(
            ctx.db,
            state=state or None,
            sort=sort,
            search=search or None,
            min_category=min_category,
        )
        if principal
        else []
    )
    refresh = max(0, min(refresh, 3600))

    def link(**changes: Any) -> str:
        params = {
            "state": state,
            "sort": sort,
            "q": search,
            "refresh": refresh,
            "min_category": min_category,
        } | changes
        return "/?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

    return _page(
        request,
        "worklist.html",
        exams=rows,
        counts=state_counts(ctx.db),
        state=state,
        sort=sort,
        min_category=min_category,
        q=search,
        refresh=refresh,
        link=link,
        states=[s.value for s in ExamState],
    )


# --- one exam ---------------------------------------------------------------------------------
@router.get("/exams/{study_uid}", response_class=HTMLResponse, response_model=None)
def exam_page(request: Request, study_uid: str, heat: int = 1, boxes: int = 1) -> Response:
    """The exam; ``heat=0`` / ``boxes=0`` open it with the heat map / ROI boxes switched off."""
    ctx = context(request)
    principal = current_principal(request)
    if principal is None:
        return _to_login(request)
    view = exam_view(ctx.db, ctx.headers, study_uid)
    cells = [_cell(ctx, study_uid, cell, principal) for cell in view.views]
    ctx.audit.record(
        actor(request),
        audit.VIEWED,
        study_uid,
        page="exam",
        identifiers=principal is not None,
        peer=client_host(request),
    )
    return _page(
        request,
        "exam.html",
        view=view,
        exam=view,
        result=view.result,
        cells=cells,
        slot_names=SLOT_NAMES,
        heat_on=heat != 0,
        boxes_on=boxes != 0,
    )


def _cell(ctx: Any, study_uid: str, cell: ViewCell, principal: Principal | None) -> dict[str, Any]:
    """What the template needs to draw one view: image URLs, SVG geometry, scores."""
    out: dict[str, Any] = {
        "slot": cell.slot,
        "name": SLOT_NAMES[cell.slot],
        "cell": cell,
        "side": "right" if cell.slot.startswith("R") else "left",
    }
    if cell.sop_instance_uid is None:
        return out
    base = f"/exams/{quote(study_uid)}/views"
    out["image_url"] = f"{base}/{cell.sop_instance_uid}.png"
    if cell.seg_sop_instance_uid:
        out["heat_url"] = (
            f"/exams/{quote(study_uid)}/overlays/{cell.seg_sop_instance_uid}.png"
            f"?hang={cell.sop_instance_uid}"
        )
    if cell.sc_sop_instance_uid:
        out["sc_url"] = f"{base}/{cell.sc_sop_instance_uid}.png?hang={cell.sop_instance_uid}"
    if cell.rows and cell.columns:
        flips = ctx.views.flips_for(study_uid, cell.sop_instance_uid)
        a, e = (-1, cell.columns) if flips.horizontal else (1, 0)
        d, f = (-1, cell.rows) if flips.vertical else (1, 0)
        out["geometry"] = {
            "w": cell.columns,
            "h": cell.rows,
            "transform": f"matrix({a} 0 0 {d} {e} {f})",
        }
        out["mark"] = max(cell.columns, cell.rows) / 60.0
    out["visible"] = principal is not None
    return out


@router.get("/exams/{study_uid}/views/{sop_uid}.png")
def view_image(request: Request, study_uid: str, sop_uid: str, hang: str = "") -> Response:
    """A downsampled, hung PNG of an exam's image (signed-in users only: pixels are PHI)."""
    ctx = context(request)
    if current_principal(request) is None:
        raise WebError(401, "sign in to see images")
    try:
        path = ctx.views.png(study_uid, sop_uid, hung_like=hang or None)
    except PixelDataError as exc:
        raise WebError(422, f"image {sop_uid} cannot be displayed: {exc}") from exc
    return FileResponse(
        path, media_type="image/png", headers={"Cache-Control": "private, no-store"}
    )


@router.get("/exams/{study_uid}/overlays/{seg_uid}.png")
def view_overlay(request: Request, study_uid: str, seg_uid: str, hang: str) -> Response:
    """The saliency SEG of a view as a transparent PNG over that view's image."""
    ctx = context(request)
    if current_principal(request) is None:
        raise WebError(401, "sign in to see images")
    try:
        path = ctx.views.overlay_png(study_uid, seg_uid, hung_like=hang)
    except PixelDataError as exc:
        raise WebError(422, f"overlay {seg_uid} cannot be displayed: {exc}") from exc
    return FileResponse(
        path, media_type="image/png", headers={"Cache-Control": "private, no-store"}
    )


# --- sign in / out ----------------------------------------------------------------------------
def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    ctx = context(request)
    return _page(
        request, "login.html", next=_safe_next(next), error="", tokens_configured=bool(ctx.tokens)
    )


@router.post("/login", response_model=None)
def login(request: Request, token: str = Form(""), next: str = Form("/")) -> Response:
    ctx = context(request)
    entry = ctx.tokens.verify(token.strip()) if token.strip() else None
    if entry is None:
        ctx.audit.record_now(f"anonymous@{client_host(request)}", audit.LOGIN_FAILED)
        return _page(
            request,
            "login.html",
            401,
            next=_safe_next(next),
            error="That token is not valid.",
            tokens_configured=bool(ctx.tokens),
        )
    ctx.audit.record_now(entry.name, audit.LOGIN, peer=client_host(request))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        ctx.signer.issue(entry),
        max_age=ctx.signer.lifetime,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https"
        or (ctx.public_url or "").lower().startswith("https://")
        or ctx.settings.https_cert is not None,
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    ctx = context(request)
    principal = current_principal(request)
    if principal is not None:
        ctx.audit.record_now(principal.name, audit.LOGOUT)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
