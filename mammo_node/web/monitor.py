"""GET /monitor: how the model behaves over time (per week, scanner, model version), with
plots drawn on the server; /monitor/plots/NAME.png and /api/monitor give the same data.

Like the worklist's counts, nothing here identifies a patient (weeks, scanners, versions,
counts and rates), so the page needs no sign-in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from mammo_node.observe.monitor import cached_report, monitor_report
from mammo_node.web.deps import context
from mammo_node.web.errors import WebError

router = APIRouter()
PLOT_TITLES = {
    "exams": "Exams scored per week",
    "scores": "Score distribution",
    "recall": "Recall rate",
    "drift": "Drift",
    "categories": "Category drift",
    "time": "Time to result",
}


@router.get("/monitor", response_class=HTMLResponse)
def monitor_page(request: Request) -> HTMLResponse:
    from mammo_node.web.pages import _page

    ctx = context(request)
    report, _exams = cached_report(ctx.settings, ctx.db)
    return _page(
        request,
        "monitor.html",
        report=report,
        plots=PLOT_TITLES,
        alerts=[d for d in report.drift if d.alert],
        category_alerts=[d for d in report.category_drift if d.alert],
    )


@router.get("/monitor/plots/{name}.png")
def monitor_plot(request: Request, name: str) -> Response:
    from mammo_node.observe.plots import PLOTS

    if name not in PLOTS:
        raise WebError(404, f"no plot {name!r}; there are {', '.join(PLOTS)}")
    ctx = context(request)
    report, exams = cached_report(ctx.settings, ctx.db)
    return Response(
        PLOTS[name](report, exams), media_type="image/png", headers={"Cache-Control": "no-store"}
    )


@router.get("/api/monitor")
def monitor_json(request: Request) -> JSONResponse:
    ctx = context(request)
    return JSONResponse(monitor_report(ctx.settings, ctx.db).to_json())  # always fresh
