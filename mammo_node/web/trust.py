"""The Host header check (``trusted_hosts``): a page of another site whose name was made to
resolve to this node (DNS rebinding) sends its own name as Host and is refused here.

Health probes (/healthz, /readyz) answer whatever the Host, as orchestrators probe by address.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mammo_node.web.auth import host_name

PROBES = ("/healthz", "/readyz")


def host_allowed(host: str, patterns: list[str]) -> bool:
    name = host_name(host)
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class TrustedHosts:
    def __init__(self, app: ASGIApp, patterns: list[str]) -> None:
        self.app = app
        self.patterns = patterns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.patterns or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        host = ""
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
                break
        if host_allowed(host, self.patterns):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "the Host header names a host this node does not serve (trusted_hosts)\n",
            status_code=400,
        )
        await response(scope, receive, send)
