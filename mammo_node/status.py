"""DIMSE status codes the node sends and reads, by name (PS3.4 Annex B.2.3, PS3.7 Annex C).

One table for the C-STORE handler, ingest, storage and STOW-RS (which reports the same codes in
FailureReason (0008,1197)), and the SCU that reads a peer's answers. The 0xC2xx codes are
"Cannot understand" sub-codes in the range the standard leaves to the implementation; the
pynetdicom applications use 0xC210 and 0xC211 the same way. A modality's log shows the number:
the name here and the comment beside it is what it means.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """A DIMSE status: 0x0000 success, 0xBxxx warning, 0xA7xx/0xA9xx/0xCxxx/0x01xx failure."""

    SUCCESS = 0x0000
    # warnings (the object was stored)
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # failures
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111  # other bytes under a stored UID; the policy keeps the first
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700  # disk below the floor, database unavailable
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # SOP class in the data set ≠ the request's
    CANNOT_UNDERSTAND = 0xC000
    CANNOT_DECODE_DATA_SET = 0xC210  # truncated or unparsable data set
    HANDLER_ERROR = 0xC211  # the node failed while filing it (see its log)
    MISSING_ATTRIBUTE = 0xC220  # a required UID is absent
    INVALID_UID = 0xC221  # a UID breaks the UID grammar (e.g. a path)
    SOP_INSTANCE_MISMATCH = 0xC222  # SOP Instance UID in the data set ≠ the request's
    DATA_SET_TOO_LARGE = 0xC230  # inflates or decodes past the node's limits (limits.py)

    @property
    def is_success(self) -> bool:
        return self is Status.SUCCESS

    @property
    def is_warning(self) -> bool:
        return 0xB000 <= self.value <= 0xBFFF


#: Statuses after which the peer has stored the object (PS3.4 B.2.3: warnings are stored).
STORED_STATUSES = frozenset(
    {
        Status.SUCCESS,
        Status.COERCION_OF_DATA_ELEMENTS,
        Status.ELEMENTS_DISCARDED,
        Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING,
    }
)


def status_name(code: int) -> str:
    """``0xA700 OUT_OF_RESOURCES`` for a known code, ``0x1234`` for another."""
    try:
        return f"0x{code:04X} {Status(code).name}"
    except ValueError:
        return f"0x{code:04X}"
