"""Pixel work for the web (renders, frames of compressed images, transcodes): limits on the
header in the web process, the decode itself in the decoder sandbox.

A decoder that crashes or runs out of memory on a hostile file then costs one request an
error (503), and the HTTP and DICOM listeners of the process stay up.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian

from mammo_node.config import Settings
from mammo_node.errors import PixelDataError
from mammo_node.limits import ImageLimits, ImageTooLargeError, check_before_decode, check_deflate
from mammo_node.sandbox import Sandbox, SandboxCrash
from mammo_node.web import render
from mammo_node.web.errors import DicomWebError


def web_decoder(settings: Settings) -> Sandbox:
    from mammo_node.grouping.service import decoder_memory_limit

    return Sandbox("web decoder", decoder_memory_limit(settings), timeout=120, processes=2)


def check_file(path: Path, limits: ImageLimits, *, frames: int | None) -> None:
    """Every limit, on the header only; DicomWebError 413 when one is exceeded."""
    try:
        check_deflate(path, limits)
        check_before_decode(dcmread(path, defer_size=1024), limits, path=path, frames=frames)
    except ImageTooLargeError as exc:
        raise DicomWebError(413, str(exc)) from exc
    except DicomWebError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed files
        raise DicomWebError(406, f"cannot read the stored file ({type(exc).__name__})") from exc


def in_sandbox(decoder: Sandbox, fn: Any, *args: Any) -> Any:
    try:
        return decoder.call(fn, *args)
    except SandboxCrash as exc:
        raise DicomWebError(503, f"decoding failed: {exc}", {"Retry-After": "5"}) from exc


def render_file(decoder: Sandbox, limits: ImageLimits, path: Path, media: str, **kw: Any) -> bytes:
    check_file(path, limits, frames=None)  # renders decode every frame of the instance
    return bytes(in_sandbox(decoder, _render, path, media, kw))


def _render(path: Path, media: str, kw: dict[str, Any]) -> bytes:
    return render.render_file(path, media, **kw)


def decoded_frame(path: Path, number: int) -> bytes:
    """One frame (1-based) of a compressed image, decoded (runs in the sandbox)."""
    try:
        return bytes(pixel_array(path, index=number - 1).tobytes())
    except Exception as exc:  # decoders raise many types
        raise PixelDataError(f"frame {number} cannot be decoded ({type(exc).__name__})") from exc


def transcoded(path: Path) -> bytes:
    """The stored file as Explicit VR Little Endian (runs in the sandbox)."""
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
