"""Media types on the wire: Accept negotiation, multipart/related out (streamed from disk) and
in (STOW-RS bodies streamed to temp files).

PS3.18 8.7: a DICOM retrieve answers ``multipart/related; type="application/dicom"``; each part
says its transfer syntax. The ``transfer-syntax`` parameter of the Accept header picks it:
absent means Explicit VR Little Endian (1.2.840.10008.1.2.1), ``*`` means as stored.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Response
from fastapi.responses import StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from mammo_node.web.errors import DicomWebError

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
MULTIPART_RELATED = "multipart/related"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class MediaRange:
    type: str  # "multipart/related", "image/png", "*/*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        major, _, minor = media_type.partition("/")
        own_major, _, own_minor = self.type.partition("/")
        return own_major in ("*", major) and own_minor in ("*", minor)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_media_type(text: str) -> MediaRange:
    pieces = _split_outside_quotes(text, ";")
    if not pieces:
        return MediaRange("")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        else:
            params[name] = value
    return MediaRange(pieces[0].lower(), params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, best first (q=0 dropped); absent header -> ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(t) for t in _split_outside_quotes(header, ",")]
    return sorted((r for r in ranges if r.q > 0 and r.type), key=lambda r: -r.q)


# --- DICOM retrieve negotiation -------------------------------------------------------------------
@dataclass(frozen=True)
class DicomAcceptance:
    """Which transfer syntaxes a client takes for ``application/dicom`` parts."""

    any_syntax: bool
    syntaxes: frozenset[str]

    def choose(self, stored: str) -> str | None:
        """Transfer syntax to send an instance stored in ``stored``; None if none is acceptable."""
        if self.any_syntax or stored in self.syntaxes:
            return stored
        if EXPLICIT_VR_LE in self.syntaxes:
            return EXPLICIT_VR_LE
        return None


def dicom_acceptance(header: str | None) -> DicomAcceptance:
    """From Accept: multipart/related; type="application/dicom"[; transfer-syntax=...]."""
    any_syntax, syntaxes = False, set()
    usable = False
    for media in parse_accept(header):
        if media.type in ("*/*", "multipart/*"):
            usable = True
            syntaxes.add(EXPLICIT_VR_LE)
            continue
        if media.type != MULTIPART_RELATED:
            continue
        if media.params.get("type", DICOM).lower() not in (DICOM, "application/*", "*/*"):
            continue
        usable = True
        wanted = media.params.get("transfer-syntax")
        if wanted == "*":
            any_syntax = True
        else:
            syntaxes.add(wanted or EXPLICIT_VR_LE)
    if not usable:
        raise DicomWebError(
            406,
            f"Accept {header!r} names no media type this resource has; it answers "
            'multipart/related; type="application/dicom" (transfer-syntax=* or a UID).',
        )
    return DicomAcceptance(any_syntax, frozenset(syntaxes))


def choose_media(header: str | None, offered: list[str]) -> str:
    """The first of ``offered`` (server preference) that the Accept header allows, or 406."""
    ranges = parse_accept(header)
    best: tuple[float, int, str] | None = None
    for index, media_type in enumerate(offered):
        for media in ranges:
            if media.matches(media_type):
                key = (-media.q, index, media_type)
                best = key if best is None or key < best else best
                break
    if best is None:
        raise DicomWebError(
            406, f"Accept {header!r} allows none of the media types offered: {', '.join(offered)}."
        )
    return best[2]


# --- multipart out ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One part of a multipart answer: a file on disk, or bytes made on demand."""

    content_type: str
    path: Path | None = None
    produce: Callable[[], bytes] | None = None
    location: str = ""


def new_boundary() -> str:
    return f"mammo-{secrets.token_hex(16)}"


def multipart_related_type(boundary: str, part_type: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def stream_multipart(parts: list[Part], boundary: str) -> Iterator[bytes]:
    """Yield a multipart/related body; files are read in 1 MiB chunks, never whole."""
    for part in parts:
        if part.path is not None:
            size = part.path.stat().st_size
            yield _part_head(boundary, part, size)
            with part.path.open("rb") as fh:
                remaining = size
                while remaining > 0 and (chunk := fh.read(min(CHUNK, remaining))):
                    remaining -= len(chunk)
                    yield chunk
        else:
            assert part.produce is not None
            data = part.produce()
            yield _part_head(boundary, part, len(data)) + data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def multipart_response(
    parts: list[Part], part_type: str, *, in_memory_below: int = 2**21, expected_bytes: int = 0
) -> Response:
    """A multipart/related answer: built in memory when the files are small (one write, no
    thread hop per chunk), streamed from disk in 1 MiB chunks otherwise. ``expected_bytes``
    is what the produced parts will hold (frames), so large answers stream part by part."""
    boundary = new_boundary()
    media_type = multipart_related_type(boundary, part_type)
    on_disk = expected_bytes + sum(p.path.stat().st_size for p in parts if p.path is not None)
    if on_disk < in_memory_below:
        return Response(b"".join(stream_multipart(parts, boundary)), media_type=media_type)
    return StreamingResponse(stream_multipart(parts, boundary), media_type=media_type)


def _part_head(boundary: str, part: Part, size: int) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {part.content_type}", f"Content-Length: {size}"]
    if part.location:
        lines.append(f"Content-Location: {part.location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


# --- multipart in (STOW-RS) ---------------------------------------------------------------------
@dataclass
class ReceivedPart:
    content_type: str
    path: Path
    size: int = 0


class MultipartReceiver:
    """Feed a multipart/related body chunk by chunk; each part lands in a temp file.

    ``new_file`` makes an empty temp file (the instance store's, so that filing it is a rename);
    parts already written are in ``parts``; ``cleanup`` deletes the files not taken.
    """

    def __init__(
        self,
        boundary: str,
        new_file: Callable[[], Path],
        *,
        max_parts: int = 10_000,
        max_part_bytes: int = 0,
    ) -> None:
        if not boundary:
            raise DicomWebError(400, "multipart/related request without a boundary parameter")
        self.new_file = new_file
        self.max_parts = max_parts  # part headers are bounded by the parser (size and count)
        self.max_part_bytes = max_part_bytes  # 0 = only the request's own limit
        self.parts: list[ReceivedPart] = []
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[str, str] = {}
        self._fd: int | None = None
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise DicomWebError(400, f"malformed multipart/related body: {exc}") from exc

    def finish(self) -> list[ReceivedPart]:
        self._parser.finalize()
        if self._fd is not None or not self.ended:
            raise DicomWebError(400, "multipart/related body ended before its closing boundary")
        return self.parts

    def cleanup(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for part in self.parts:
            part.path.unlink(missing_ok=True)

    # --- parser callbacks -------------------------------------------------------------------------
    def _on_part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:  # before its file is made
            raise DicomWebError(
                413, f"the body holds more than {self.max_parts} parts (the limit per request)"
            )
        self._headers = {}
        self._header_bytes = 0

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.MAX_PART_HEADER_BYTES:
            raise DicomWebError(431, f"a part's headers exceed {self.MAX_PART_HEADER_BYTES} bytes")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        path = self.new_file()
        self.parts.append(ReceivedPart(self._headers.get("content-type", ""), path))
        self._fd = os.open(path, os.O_WRONLY | os.O_TRUNC)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None
        if self.max_part_bytes and self.parts[-1].size + end - start > self.max_part_bytes:
            raise DicomWebError(
                413, f"a part is larger than max_instance_bytes={self.max_part_bytes}"
            )
        view = memoryview(data)[start:end]
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.parts[-1].size += end - start

    def _on_part_end(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _on_end(self) -> None:
        self.ended = True
