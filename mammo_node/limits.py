"""Limits checked on the header, before any work is done on a file from outside.

A DICOM header says how large its pixels are once decoded (Rows x Columns x Samples x Frames
x BitsAllocated) and nothing stops a sender from declaring 65535 x 65535 x 2^31 frames, or
from sending a 0.5 MB Deflated data set that inflates to gigabytes. Every place that decodes
pixels (the grouper's pixel check, the worker, renders, transcodes, frame retrieval) asks
``check_decoded_size`` first; every place that parses a file from outside reads it through
``check_deflate`` (a streaming inflate that stops at the cap), so the memory a file can cost
is bounded by settings, not by the file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset
from pydicom.filereader import read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from mammo_node.errors import PixelDataError

if TYPE_CHECKING:
    from mammo_node.config import Settings

_CHUNK = 256 * 1024


class ImageTooLargeError(PixelDataError):
    """The header declares pixels (or an inflated data set) larger than the node's limits."""


@dataclass(frozen=True)
class ImageLimits:
    max_frame_pixels: int = 60_000_000
    max_decoded_bytes: int = 512 * 2**20
    max_inflated_bytes: int = 512 * 2**20

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(settings.max_image_pixels, settings.max_image_bytes, settings.max_inflated_bytes)


@dataclass(frozen=True)
class DecodedSize:
    rows: int
    columns: int
    samples: int
    frames: int
    bits: int

    @property
    def frame_pixels(self) -> int:
        return self.rows * self.columns

    @property
    def frame_bytes(self) -> int:
        # decoders hand out whole bytes per sample (1-bit data is unpacked to uint8)
        return self.frame_pixels * self.samples * max(1, (self.bits + 7) // 8)

    @property
    def total_bytes(self) -> int:
        return self.frame_bytes * self.frames


def _header_int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImageTooLargeError(f"{keyword} is not a number") from None
    if number < 0:
        raise ImageTooLargeError(f"{keyword} is negative ({number})")
    return number


def decoded_size(ds: Dataset) -> DecodedSize:
    """What the header says one decode of the pixel data produces (raises on nonsense)."""
    return DecodedSize(
        rows=_header_int(ds, "Rows", 0),
        columns=_header_int(ds, "Columns", 0),
        samples=max(1, _header_int(ds, "SamplesPerPixel", 1)),
        frames=max(1, _header_int(ds, "NumberOfFrames", 1)),
        bits=_header_int(ds, "BitsAllocated", 16),
    )


def check_decoded_size(ds: Dataset, limits: ImageLimits, *, frames: int | None = None) -> None:
    """Refuse before decoding when the declared image exceeds the limits.

    ``frames`` is how many frames this decode produces (None: all of them).
    """
    size = decoded_size(ds)
    if size.frame_pixels > limits.max_frame_pixels:
        raise ImageTooLargeError(
            f"image of {size.columns}x{size.rows} = {size.frame_pixels} pixels per frame exceeds "
            f"max_image_pixels={limits.max_frame_pixels}; not decoded"
        )
    count = size.frames if frames is None else min(frames, size.frames)
    decoded = size.frame_bytes * count
    if decoded > limits.max_decoded_bytes:
        raise ImageTooLargeError(
            f"decoding {count} frame(s) of {size.columns}x{size.rows}x{size.samples} at "
            f"{size.bits} bits would take {decoded} bytes, above max_image_bytes="
            f"{limits.max_decoded_bytes}; not decoded"
        )


def _dataset_offset_if_deflated(path: Path) -> int | None:
    """Byte offset of the data set after the File Meta group when the file is Deflated."""
    from pydicom.filereader import _read_file_meta_info

    with path.open("rb") as fh:
        read_preamble(fh, force=True)
        meta = _read_file_meta_info(fh)
        syntax = meta.get("TransferSyntaxUID")
        if syntax is None or str(syntax) != DeflatedExplicitVRLittleEndian:
            return None
        return fh.tell()


def check_deflate(path: Path, limits: ImageLimits) -> int | None:
    """Inflate a Deflated data set as a stream, stopping at ``max_inflated_bytes``.

    Returns the inflated size (None when the file is not Deflated). pydicom inflates the whole
    data set in memory in one call; this check runs first so that it only ever inflates a
    data set known to fit.
    """
    try:
        offset = _dataset_offset_if_deflated(path)
    except Exception:  # an unreadable File Meta group: the parser reports it
        return None
    if offset is None:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(_CHUNK):
            data = chunk
            while data:
                out = inflater.decompress(data, _CHUNK)
                total += len(out)
                if total > limits.max_inflated_bytes:
                    raise ImageTooLargeError(
                        f"the Deflated data set inflates past max_inflated_bytes="
                        f"{limits.max_inflated_bytes}; refused before parsing"
                    )
                data = inflater.unconsumed_tail
    return total


# --- compressed pixel data: the codestream's own dimensions ---------------------------------
# A JPEG / JPEG-LS / JPEG 2000 codestream carries its own size, and decoders allocate what the
# codestream says, not what Rows and Columns say: a 30000 x 30000 constant image compresses to
# a few hundred bytes under a header claiming 64 x 64. The first fragment's size marker is read
# (a few bytes) and must agree with the header before any decoder runs.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_PREFIX = 64 * 1024


def codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """(rows, columns) declared by a JPEG, JPEG-LS or JPEG 2000 codestream; None if unknown."""
    if fragment[:4] == b"\x00\x00\x00\x0c" and fragment[4:8] == b"jP  ":  # JP2 file box
        index = fragment.find(b"\xff\x4f\xff\x51")
        return _j2k_siz(fragment[index + 2 :]) if index >= 0 else None
    if fragment[:4] == b"\xff\x4f\xff\x51":  # J2K: SOC then SIZ
        return _j2k_siz(fragment[2:])
    if fragment[:2] == b"\xff\xd8":
        return _jpeg_sof(fragment)
    return None


def _j2k_siz(data: bytes) -> tuple[int, int] | None:
    # SIZ: marker(2) Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4)
    if len(data) < 22:
        return None
    xsiz, ysiz, xo, yo = (int.from_bytes(data[i : i + 4], "big") for i in (6, 10, 14, 18))
    return max(0, ysiz - yo), max(0, xsiz - xo)


def _jpeg_sof(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            index += 2
            continue
        length = int.from_bytes(data[index + 2 : index + 4], "big")
        if marker in _JPEG_SOF:
            if index + 9 > len(data):
                return None
            rows = int.from_bytes(data[index + 5 : index + 7], "big")
            columns = int.from_bytes(data[index + 7 : index + 9], "big")
            return rows, columns
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        index += 2 + length
    return None


def first_fragment(encapsulated: bytes) -> bytes | None:
    """The start of the first fragment of encapsulated Pixel Data (after the offset table)."""
    item = b"\xfe\xff\x00\xe0"
    if len(encapsulated) < 8 or encapsulated[:4] != item:
        return None
    offset = 8 + int.from_bytes(encapsulated[4:8], "little")  # skip the Basic Offset Table
    if len(encapsulated) < offset + 8 or encapsulated[offset : offset + 4] != item:
        return None
    length = int.from_bytes(encapsulated[offset + 4 : offset + 8], "little")
    return encapsulated[offset + 8 : offset + 8 + min(length, _PREFIX)]


def check_codestream(ds: Dataset, path: Path | None = None) -> None:
    """A compressed image's codestream must not declare more pixels than its header."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed or syntax.is_deflated:
        return
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    if element is None:
        return
    prefix: bytes | None
    if element.value is None and path is not None and getattr(element, "value_tell", None):
        with path.open("rb") as fh:
            fh.seek(element.value_tell)  # type: ignore[union-attr]
            prefix = fh.read(_PREFIX)
    else:
        value = element.value
        prefix = bytes(value[:_PREFIX]) if isinstance(value, bytes | bytearray) else None
    fragment = first_fragment(prefix) if prefix else None
    declared = codestream_size(fragment) if fragment else None
    if declared is None:
        return
    size = decoded_size(ds)
    rows, columns = declared
    if rows * columns > size.frame_pixels:
        raise ImageTooLargeError(
            f"the compressed codestream declares {columns}x{rows} pixels, the header "
            f"{size.columns}x{size.rows}; not decoded"
        )


def check_before_decode(
    ds: Dataset, limits: ImageLimits, *, path: Path | None = None, frames: int | None = None
) -> None:
    """Every check a decode must pass: header size, byte budget, codestream size."""
    check_decoded_size(ds, limits, frames=frames)
    check_codestream(ds, path)
