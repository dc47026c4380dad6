"""Checks on a DICOM connection before pynetdicom reads a PDU from it.

pynetdicom reads the 6-byte PDU header and then the whole PDU into memory (the length field
allows 4 GiB) before any event handler runs, so the allow-list and every size limit would come
too late. Here, at the socket level:

- the peer's address is checked against the allow-list on accept (``verify_request``): a host
  no rule admits is disconnected before a byte is read;
- every PDU header is checked before its body is read: an A-ASSOCIATE-RQ (and the other
  control PDUs) may be at most ``max_associate_rq_bytes``, a P-DATA-TF at most the PDU size the
  node offered (``max_pdu_size``; when that is 0 = unlimited, ``max_inflated_bytes``). A longer
  PDU closes the connection.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from mammo_node.config import Settings
from mammo_node.receive.peers import AllowList
from mammo_node.tcp import send_without_delay

logger = logging.getLogger(__name__)

P_DATA_TF = 0x04
#: called with (host, port, reason) when a connection is refused here
OnRefused = Callable[[str, int, str], None]


class PduTooLarge(OSError):
    """A peer announced a PDU longer than the node reads (pynetdicom: connection closed)."""


class PduGuard:
    """Stands in for ``AssociationSocket.recv``: reads the PDU header, checks the length."""

    def __init__(
        self,
        recv: Callable[[int], bytearray],
        *,
        control_limit: int,
        data_limit: int,
        peer: tuple[str, int],
        on_refused: OnRefused | None,
    ) -> None:
        self._recv = recv
        self.control_limit = control_limit
        self.data_limit = data_limit
        self.peer = peer
        self.on_refused = on_refused
        self._expect_header = True

    def __call__(self, nr_bytes: int) -> bytearray:
        if not self._expect_header:
            self._expect_header = True
            return self._recv(nr_bytes)
        data = self._recv(nr_bytes)
        if nr_bytes != 6 or len(data) != 6:
            return data
        pdu_type, _, length = struct.unpack(">BBL", bytes(data))
        limit = self.data_limit if pdu_type == P_DATA_TF else self.control_limit
        if length > limit:
            reason = (
                f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds the limit of {limit} "
                "(max_associate_rq_bytes / max_pdu_size); connection closed unread"
            )
            logger.warning("refusing %s:%d: %s", self.peer[0], self.peer[1], reason)
            if self.on_refused is not None:
                self.on_refused(self.peer[0], self.peer[1], reason)
            raise PduTooLarge(reason)
        self._expect_header = False
        return data


class GuardedRequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server: GuardedAssociationServer = self.server  # type: ignore[assignment]
        sock = assoc.dul.socket
        send_without_delay(self.request)  # C-STORE-RSPs go out at once (mammo_node.tcp)
        sock.recv = PduGuard(  # type: ignore[method-assign]
            sock.recv,
            control_limit=server.control_limit,
            data_limit=server.data_limit,
            peer=(str(self.client_address[0]), int(self.client_address[1])),
            on_refused=server.on_refused,
        )
        return assoc


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the allow-list on accept and PDU length limits."""

    allow_list: AllowList
    control_limit: int
    data_limit: int
    on_refused: OnRefused | None = None

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host, port = str(client_address[0]), int(client_address[1])
        if self.allow_list.host_admitted(host):
            return True
        reason = f"host {host} is not in allowed_peers; disconnected before reading"
        logger.warning("refusing %s:%d: %s", host, port, reason)
        if self.on_refused is not None:
            self.on_refused(host, port, reason)
        return False


def start_guarded_server(
    ae: AE,
    settings: Settings,
    *,
    evt_handlers: list[Any],
    ssl_context: Any,
    on_refused: OnRefused | None = None,
) -> GuardedAssociationServer:
    """``ae.start_server(block=False)`` with the guards installed before the first accept."""
    server = ae.make_server(
        (settings.host, settings.port),
        evt_handlers=evt_handlers,
        ssl_context=ssl_context,
        server_class=GuardedAssociationServer,
        request_handler=GuardedRequestHandler,
    )
    assert isinstance(server, GuardedAssociationServer)
    server.allow_list = AllowList(settings.allowed_peers)
    server.control_limit = settings.max_associate_rq_bytes
    server.data_limit = (
        settings.max_pdu_size + 6 if settings.max_pdu_size else settings.max_inflated_bytes
    )
    server.on_refused = on_refused
    thread = threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True)
    thread.start()
    ae._servers.append(server)  # as AE.start_server does: server.shutdown() removes it
    return server
