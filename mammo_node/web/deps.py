"""What every route needs, built once per app, and the authentication dependencies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from mammo_node.config import Settings
from mammo_node.db.session import Database
from mammo_node.filing.ingest import Ingestor
from mammo_node.observe.audit import AuditLog
from mammo_node.observe.loops import Loops
from mammo_node.receive.activity import ReceivingNow
from mammo_node.sandbox import Sandbox
from mammo_node.web.auth import (
    SESSION_COOKIE,
    Principal,
    Role,
    SessionSigner,
    TokenStore,
    bearer_token,
    is_local_request,
)
from mammo_node.web.dicomjson import HeaderCache
from mammo_node.web.errors import WebError
from mammo_node.web.qido import Searcher
from mammo_node.web.viewimages import ViewImages

ModelReady = Callable[[], tuple[bool, str]]
LOOPBACK = Principal("loopback", Role.ADMIN, "loopback")


@dataclass
class WebContext:
    settings: Settings
    db: Database
    ingestor: Ingestor
    tokens: TokenStore
    signer: SessionSigner
    headers: HeaderCache
    searcher: Searcher
    views: ViewImages
    audit: AuditLog
    model_ready: ModelReady | None
    loops: Loops
    max_stow_bytes: int
    public_url: str | None = None
    # pixel decodes of the web (renders, frames, transcodes) run in this child process
    decoder: Sandbox | None = None
    # STOW-RS requests being filed at once (max_stow_concurrency); the rest get 503
    stow_slots: threading.BoundedSemaphore | None = None
    # STOW-RS uploads in flight count as receiving (the node's one counter; the scoring
    # process gives way to them as to open associations)
    receiving: ReceivingNow = field(default_factory=ReceivingNow)


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.mammo
    return ctx


def public_base(request: Request) -> str:
    """The URL clients reach this server at (for RetrieveURL and BulkDataURI).

    ``public_url`` when configured; else the request's scheme and Host header. A client that
    sends a Host header without the port (dicomweb-client does) and comes straight to us (no
    X-Forwarded-* header) reached us on our listening port, so that port is added.
    """
    ctx = context(request)
    if ctx.public_url:
        return ctx.public_url.rstrip("/")
    base = str(request.base_url).rstrip("/")
    headers = request.headers
    host = headers.get("host", "")
    proxied = any(name.startswith("x-forwarded-") for name in headers)
    server = request.scope.get("server")
    if host and not proxied and server and not _has_port(host):
        port = int(server[1])
        default = 443 if request.url.scheme == "https" else 80
        if port != default:
            base = f"{request.url.scheme}://{host}:{port}"
    return base


def _has_port(host: str) -> bool:
    if host.startswith("["):  # [v6]:port
        return "]:" in host
    return ":" in host


def client_host(request: Request) -> str:
    return request.client.host if request.client else ""


def current_principal(request: Request) -> Principal | None:
    """Bearer token, else UI session cookie, else loopback (when allowed), else None.

    A bearer token that is present but wrong is refused outright (401), never downgraded.
    """
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    ctx = context(request)
    principal: Principal | None = None
    header = request.headers.get("authorization")
    if header:
        secret = bearer_token(header)
        entry = ctx.tokens.verify(secret) if secret else None
        if entry is None:
            raise WebError(
                401,
                "the Authorization header does not hold a valid bearer token",
                {"WWW-Authenticate": 'Bearer realm="mammo-node", error="invalid_token"'},
            )
        principal = Principal(entry.name, entry.role, "token", entry.fingerprint)
    elif (cookie := request.cookies.get(SESSION_COOKIE)) is not None:
        principal = ctx.signer.verify(cookie, ctx.tokens)
    if (
        principal is None
        and ctx.settings.loopback_without_token
        and is_local_request(client_host(request), request.headers)
    ):
        principal = LOOPBACK
    request.state.principal = principal
    return principal


def require_read(request: Request) -> Principal:
    principal = current_principal(request)
    if principal is None:
        raise WebError(
            401,
            "a bearer token (role read or admin) is required",
            {"WWW-Authenticate": 'Bearer realm="mammo-node"'},
        )
    return principal


def require_admin(request: Request) -> Principal:
    principal = require_read(request)
    if not principal.is_admin:
        raise WebError(403, f"token {principal.name!r} has role read; this needs role admin")
    return principal


def actor(request: Request) -> str:
    """Who to write into the audit trail: the principal's name, else anonymous@host."""
    principal = current_principal(request)
    return principal.name if principal else f"anonymous@{client_host(request)}"
