"""TCP options of the node's DICOM connections (the Storage SCP's and the SCU's).

pynetdicom leaves Nagle's algorithm on. DIMSE is request/response: a C-STORE's last
P-DATA-TF (or a small C-STORE-RSP) is then held back until the peer acknowledges the previous
segment, and the peer delays that acknowledgement (Linux: up to 40 ms) - one stall per
instance, whatever the bandwidth. Measured on the 2-core machine, one exam's 13 outputs
(48 MB) to a dcmtk storescp: 0.57 s with Nagle, 0.17 s without (storescu, which sets
TCP_NODELAY, 0.10 s). dcmtk and Orthanc turn it off for the same reason. On the listener it
changes nothing measurable with storescu as the sender (60 small instances: 0.37-0.45 s either
way), since a requestor's own Nagle is what stalls its sends; it is set there too so that the
node's answers (C-STORE-RSP, C-ECHO-RSP) never wait behind an unacknowledged segment.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

logger = logging.getLogger(__name__)


def send_without_delay(sock: Any) -> None:
    """TCP_NODELAY on a connected socket (plain or TLS-wrapped); a socket that is not TCP
    (a test's socketpair) or already closed is left as it is."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # the peer hung up between accept and here
        logger.debug("TCP_NODELAY not set: %s", exc)


def association_without_delay(assoc: Any) -> None:
    """TCP_NODELAY on an established pynetdicom association's socket."""
    transport = getattr(assoc.dul, "socket", None)
    if transport is not None and transport.socket is not None:
        send_without_delay(transport.socket)
