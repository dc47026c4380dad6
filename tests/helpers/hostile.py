"""Hostile inputs built in code, one function per class of attack (none is a stored sample).

Every builder takes sizes as arguments, so a test can vary them: the node must hold for the
class (a bomb of any ratio, a codestream of any declared size), not for one file.
"""

from __future__ import annotations

import copy
import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, generate_uid


def _fresh_uids(ds: Dataset) -> Dataset:
    out = copy.deepcopy(ds)
    out.SOPInstanceUID = generate_uid()
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def deflate_bomb(template: Dataset, path: Path, inflated_bytes: int) -> Path:
    """A Deflated Explicit VR LE file whose data set inflates to ``inflated_bytes`` (its
    Pixel Data is zeros, so the file is ~1/1000 of that)."""
    ds = _fresh_uids(template)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False  # deflated is explicit VR LE
    write_dataset(header, ds)
    pixel_length = inflated_bytes - len(header.getvalue()) - 12
    pixel_length -= pixel_length % 2
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_length)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, ds.file_meta, enforce_standard=True)  # type: ignore[arg-type]
        fh.write(compressor.compress(header.getvalue() + element))
        zeros = bytes(1 << 20)
        left = pixel_length
        while left > 0:
            chunk = zeros[: min(left, len(zeros))]
            fh.write(compressor.compress(chunk))
            left -= len(chunk)
        fh.write(compressor.flush())
    return path


def j2k_liar(template: Dataset, path: Path, rows: int, columns: int) -> Path:
    """A JPEG 2000 image whose header says Rows x Columns of the template but whose
    codestream declares ``rows`` x ``columns`` (decoders allocate the codestream's size)."""
    ds = _fresh_uids(template)
    small = np.zeros((64, 64), dtype=np.uint16)
    ds.Rows, ds.Columns = 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.compress(JPEG2000Lossless, small)
    data = bytearray(ds.PixelData)
    siz = data.find(b"\xff\x4f\xff\x51")
    assert siz >= 0, "no SIZ marker in the encoded codestream"
    base = siz + 2  # the SIZ marker: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz
    struct.pack_into(">II", data, base + 6, columns, rows)
    struct.pack_into(">II", data, base + 22, columns, rows)
    ds.PixelData = bytes(data)
    ds.save_as(path, enforce_file_format=True)
    return path


def declared_giant(template: Dataset, path: Path, rows: int, columns: int, frames: int) -> Path:
    """An uncompressed image declaring rows x columns x frames whose value is tiny: any code
    that allocates from the header before checking the length would take it all."""
    ds = _fresh_uids(template)
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(4096)
    ds.save_as(path, enforce_file_format=True)
    return path


def big_image(template: Dataset, rows: int, columns: int, seed: int = 0) -> Dataset:
    """A real, readable image of rows x columns (noise), same UIDs as the template."""
    ds = copy.deepcopy(template)
    rng = np.random.default_rng(seed)
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    return ds


def associate_rq_header(length: int) -> bytes:
    """The 6-byte header of an A-ASSOCIATE-RQ PDU announcing ``length`` bytes."""
    return struct.pack(">BBL", 0x01, 0x00, length)
