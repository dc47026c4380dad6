"""Exception text without the values in it, for logs, STOW-RS answers and exam reasons.

Third-party messages quote the values they choke on: pydicom ("Invalid value for VR PN:
'DOE^JANE'"), PostgreSQL ("DETAIL: Key (patient_key)=(123456) already exists"), decoders. The
node's logs and answers must not carry patient names, IDs or birth dates, so every exception
text from outside the node's own code passes through ``scrub`` first: quoted strings, bracketed
key values and DETAIL lines become ``…``; what is left names the kind of problem and where.
"""

from __future__ import annotations

import logging
import re
import traceback
from types import TracebackType

_PATTERNS = [
    (re.compile(r"(?m)^\s*(DETAIL|HINT|CONTEXT|\[parameters):.*$"), r"\1: …"),
    (re.compile(r"b?'(?:[^'\\]|\\.)*'"), "'…'"),
    (re.compile(r'b?"(?:[^"\\]|\\.)*"'), '"…"'),
    (re.compile(r"=\((?:[^()]|\([^()]*\))*\)"), "=(…)"),
    (re.compile(r"(?<![\d.])\d{6,}(?![\d]|\.\d)"), "…"),  # long numbers (IDs, dates), not UIDs
]
_LIMIT = 500


def scrub(text: str, limit: int = _LIMIT) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException, limit: int = _LIMIT) -> str:
    """``TypeName: scrubbed message`` of an exception."""
    message = scrub(str(exc), limit)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def format_exception(exc: BaseException) -> str:
    """A traceback (code locations) whose exception messages are scrubbed."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{describe(current)}")
        current = current.__cause__ or current.__context__
    return "\n\nwhich was raised while handling:\n".join(parts)


class ScrubbingFormatter(logging.Formatter):
    """Formats ``logger.exception`` tracebacks with scrubbed messages, and scrubs whole
    messages of other packages' loggers (pydicom warns with the invalid value quoted; Python
    warnings arrive as ``py.warnings``)."""

    def format(self, record: logging.LogRecord) -> str:
        if not record.name.startswith("mammo_node"):
            record.msg = scrub(record.getMessage(), 2000)
            record.args = ()
        if record.exc_info:
            record.exc_text = None  # another handler may have cached the unscrubbed text
        return super().format(record)

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        value = ei[1]
        if value is None:
            return super().formatException(ei)
        return format_exception(value)
