"""HTTP errors with a reason: every refusal says what was wrong and what the server expected."""

from __future__ import annotations

from mammo_node.errors import MammoNodeError


class WebError(MammoNodeError):
    """An HTTP error answer: status code plus a human-readable reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class DicomWebError(WebError):
    """A DICOMweb (PS3.18) error: 400, 404, 406, 409, 413, 415 ..."""


def warning_header(text: str) -> str:
    """A PS3.18 Warning header value (RFC 7234 299 with the reason, ASCII, quotes escaped)."""
    clean = text.encode("ascii", "replace").decode("ascii").replace('"', "'")
    clean = " ".join(clean.split())[:300]
    return f'299 mammo-node: "{clean}"'
