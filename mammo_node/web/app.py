"""The web application: DICOMweb, the worklist pages, the JSON API and the operations routes.

``create_app(settings, db, ingestor)`` builds one FastAPI app around the node's services; the
caller runs it (:class:`mammo_node.web.server.WebServer` in ``mammo-node serve``). Requests
are logged as method, path, status and time - never the query string, which may hold a
patient's name in a QIDO-RS search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import mammo_node
from mammo_node.config import Settings
from mammo_node.db.session import Database
from mammo_node.errors import DatabaseError, MammoNodeError, NotFoundError
from mammo_node.filing.ingest import Ingestor
from mammo_node.observe import metrics
from mammo_node.observe.audit import AuditLog
from mammo_node.observe.loops import Loops
from mammo_node.receive.activity import ReceivingNow
from mammo_node.web import api, dicomweb, health, pages
from mammo_node.web import metrics as metrics_route
from mammo_node.web import monitor as monitor_page
from mammo_node.web.auth import SessionSigner, TokenStore, load_or_create_secret
from mammo_node.web.decoding import web_decoder
from mammo_node.web.deps import ModelReady, WebContext
from mammo_node.web.dicomjson import HeaderCache
from mammo_node.web.errors import WebError, warning_header
from mammo_node.web.qido import Searcher
from mammo_node.web.trust import TrustedHosts
from mammo_node.web.viewimages import ViewImages

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("mammo_node.web.access")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_STOW_BYTES = 4 * 2**30
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
}


def create_app(
    settings: Settings,
    db: Database,
    ingestor: Ingestor,
    *,
    model_ready: ModelReady | None = None,
    loops: Loops | None = None,
    audit_log: AuditLog | None = None,
    max_stow_bytes: int = DEFAULT_MAX_STOW_BYTES,
    public_url: str | None = None,
    receiving: ReceivingNow | None = None,
) -> FastAPI:
    """The app. ``model_ready`` reports the scoring worker's model and ``loops`` the
    background loops for /readyz;
    ``public_url`` (e.g. https://pacs-ai.example.org) fixes the base of the URLs handed out;
    ``receiving`` is the node's count of what it receives now (STOW-RS uploads enter it)."""
    headers = HeaderCache(ingestor.store)
    log = audit_log or AuditLog(db)
    loops = Loops() if loops is None else loops
    loops.add(log.health)  # the app starts and stops the audit writer
    ctx = WebContext(
        settings=settings,
        db=db,
        ingestor=ingestor,
        tokens=TokenStore.from_settings(settings),
        signer=SessionSigner(load_or_create_secret(settings.data_dir)),
        headers=headers,
        searcher=Searcher(db.dialect, headers),
        views=ViewImages(db, ingestor.store, headers, settings.data_dir / "cache" / "views"),
        audit=log,
        model_ready=model_ready,
        loops=loops,
        max_stow_bytes=max_stow_bytes,
        public_url=public_url,
        decoder=web_decoder(settings),
        stow_slots=threading.BoundedSemaphore(settings.max_stow_concurrency),
        receiving=receiving if receiving is not None else ReceivingNow(),
    )
    if not ctx.tokens and not settings.loopback_without_token:
        logger.warning(
            "no API tokens configured (MAMMO_API_TOKENS / MAMMO_API_TOKENS_FILE) and "
            "loopback_without_token is off: DICOMweb and the API will refuse every request"
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.start()
        try:
            yield
        finally:
            log.stop()
            if ctx.decoder is not None:
                ctx.decoder.close()

    app = FastAPI(
        title="mammo-node",
        version=mammo_node.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.mammo = ctx
    for module in (dicomweb, pages, api, health, metrics_route, monitor_page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_error_handlers(app)
    app.add_middleware(AccessLog)
    app.add_middleware(TrustedHosts, patterns=list(settings.trusted_hosts))  # outermost
    return app


# --- errors ---------------------------------------------------------------------------------
def _wants_html(request: Request) -> bool:
    path = request.url.path
    machine = ("/dicomweb", "/api", "/metrics", "/healthz", "/readyz", "/static")
    return not path.startswith(machine) and not path.endswith(".png")


def _error(
    request: Request, status: int, reason: str, headers: dict[str, str] | None = None
) -> Response:
    headers = dict(headers or {})
    if _wants_html(request):
        response = pages.TEMPLATES.TemplateResponse(
            request,
            "error.html",
            {
                "request": request,
                "status": status,
                "reason": reason,
                "signed_in": False,
                "principal": None,
            },
            status_code=status,
            headers=headers,
        )
        return response
    if request.url.path.startswith("/dicomweb"):
        headers["Warning"] = warning_header(reason)
    return JSONResponse({"status": status, "reason": reason}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        return _error(request, exc.status, exc.reason, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = str(exc.detail)
        if exc.status_code == 404:
            reason = f"no resource at {request.url.path}"
        elif exc.status_code == 405:
            reason = f"{request.method} is not allowed on {request.url.path}"
        return _error(request, exc.status_code, reason, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error(request, 400, f"invalid request: {problems}")

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(DatabaseError)
    async def database_down(request: Request, exc: DatabaseError) -> Response:
        logger.error("database error answering %s: %s", request.url.path, exc)
        return _error(
            request, 503, "the database is not reachable; try again shortly", {"Retry-After": "10"}
        )

    @app.exception_handler(MammoNodeError)
    async def node_error(request: Request, exc: MammoNodeError) -> Response:
        logger.exception("error answering %s", request.url.path)
        return _error(request, 500, f"{type(exc).__name__}: {exc}"[:500])


# --- access log, security headers, request metrics ---------------------------------------------
def route_group(path: str) -> str:
    for prefix, group in (("/dicomweb", "dicomweb"), ("/api", "api"), ("/static", "static")):
        if path.startswith(prefix):
            return group
    if path in ("/metrics", "/healthz", "/readyz"):
        return "ops"
    return "pages"


class AccessLog:
    """Pure ASGI middleware: one log line and one counter per request, security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            path: str = scope.get("path", "")
            metrics.http_request(route_group(path), status)
            if access_logger.isEnabledFor(logging.INFO):
                client: Any = scope.get("client") or ("-", 0)
                access_logger.info(
                    "%s %s %s %d %.1f ms",
                    client[0],
                    scope.get("method", "-"),
                    path,
                    status,
                    (time.perf_counter() - started) * 1000.0,
                )
