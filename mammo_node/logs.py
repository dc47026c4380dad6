"""Logging set-up for the command line. Log lines carry UIDs and AE titles, never patient
names, IDs or birth dates (pynetdicom's identifier logging is switched off in dimse.scp)."""

from __future__ import annotations

import logging
import sys

from mammo_node.scrub import ScrubbingFormatter


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(  # tracebacks without the values their messages quote
        ScrubbingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # warnings (pydicom's quote values) go through the scrubber
    root.setLevel(level.upper())
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
