"""The HTTP server of ``mammo-node serve``: uvicorn in a background thread, own port.

The listening socket is bound here, before the thread starts, so that port 0 works and the
real port is known (``.port``) as soon as ``start`` returns; ``start`` returns once uvicorn
serves. ``stop`` lets requests in flight finish (up to ``grace`` seconds).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from mammo_node.config import Settings
from mammo_node.db.session import Database
from mammo_node.errors import ConfigError
from mammo_node.filing.ingest import Ingestor
from mammo_node.observe.audit import AuditLog
from mammo_node.observe.loops import Loops
from mammo_node.receive.activity import ReceivingNow
from mammo_node.web.app import DEFAULT_MAX_STOW_BYTES, create_app
from mammo_node.web.deps import ModelReady
from mammo_node.web.protocol import protocol_with_timeout

logger = logging.getLogger(__name__)


class WebServer:
    def __init__(
        self,
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
        grace: float = 10.0,
    ) -> None:
        self.settings = settings
        self.app: FastAPI = create_app(
            settings,
            db,
            ingestor,
            model_ready=model_ready,
            loops=loops,
            audit_log=audit_log,
            max_stow_bytes=max_stow_bytes,
            public_url=public_url,
            receiving=receiving,
        )
        self.grace = grace
        self.port: int = settings.http_port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _bind(self) -> socket.socket:
        host = self.settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it every answer waits ~40 ms for the client's delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.settings.http_port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen for HTTP on {host}:{self.settings.http_port} "
                f"(MAMMO_HOST / MAMMO_HTTP_PORT): {exc}"
            ) from exc
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock

    def start(self, timeout: float = 30.0) -> None:
        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=int(self.grace),
            proxy_headers=True,
            backlog=2048,
            # slowloris: request headers within http_header_timeout, idle keep-alive closed
            http=protocol_with_timeout(self.settings.http_header_timeout),
            timeout_keep_alive=max(1, int(self.settings.http_keepalive_timeout)),
            h11_max_incomplete_event_size=64 * 1024,
            limit_concurrency=1024,
            ssl_certfile=str(self.settings.https_cert) if self.settings.https_cert else None,
            ssl_keyfile=str(self.settings.https_key) if self.settings.https_key else None,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise ConfigError(
                    f"the HTTP server on {self.settings.host}:{self.port} did not start"
                )
            time.sleep(0.01)
        logger.info(
            "HTTP%s (DICOMweb, worklist) listening on %s:%d",
            "S" if self.settings.https_cert else "",
            self.settings.host,
            self.port,
        )

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(self.grace + 5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        self._server = self._thread = None
        logger.info("HTTP server stopped")
