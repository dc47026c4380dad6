"""uvicorn's HTTP/1.1 protocol with a deadline for request headers (slowloris).

uvicorn times out idle keep-alive connections only after a response, and cancels that timer
as soon as a byte arrives: a client that trickles a header line every few seconds holds its
connection (and its memory) for ever. Here every connection must complete its request headers
within ``header_timeout`` seconds of connecting, or of its previous response; otherwise it is
closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


class HeaderDeadlineProtocol(H11Protocol):
    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # headers are in; the request is being served
        if not self.transport.is_closing():
            logger.warning(
                "closing an HTTP connection from %s: no complete request headers within %.0f s",
                self.client[0] if self.client else "?",
                self.header_timeout,
            )
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)


def protocol_with_timeout(header_timeout: float) -> Any:
    """A protocol class for ``uvicorn.Config(http=...)`` with this header deadline."""
    return type("HeaderDeadline", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout})
