"""The fuzz targets of `make fuzz` (scripts/fuzz.py), also replayed by the regression test.

Each target takes bytes and must either succeed or raise the error the node answers with
(InvalidInstanceError / ImageTooLargeError for a file, DicomWebError for a body); anything else
is a crash, kept under tests/fuzz_regressions/<target>/ once fixed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from mammo_node.errors import InvalidInstanceError
from mammo_node.filing.ingest import read_facts, read_header
from mammo_node.grouping.rules import classify
from mammo_node.limits import ImageLimits, ImageTooLargeError, check_before_decode
from mammo_node.web.errors import DicomWebError
from mammo_node.web.media import MultipartReceiver

LIMITS = ImageLimits(max_frame_pixels=40_000_000, max_decoded_bytes=2**28, max_inflated_bytes=2**24)
_TEMP = Path(tempfile.mkdtemp(prefix="mammo-fuzz-"))


# --- header: a Part-10 file from outside, as ingest and the pixel checks read it -------------
def header(data: bytes) -> None:
    path = _TEMP / "part10.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + data if not data.startswith(b"\x00" * 128) else data)
    try:
        ds = read_header(path, LIMITS)
        read_facts(ds)
        check_before_decode(ds, LIMITS, path=path, frames=1)
    except (InvalidInstanceError, ImageTooLargeError):
        pass


# --- grouping rules: classify any combination of the tags it reads --------------------------
RULE_KEYWORDS = [
    ("ImageLaterality", "CS"),
    ("Laterality", "CS"),
    ("ViewPosition", "CS"),
    ("PatientOrientation", "CS"),
    ("SeriesDescription", "LO"),
    ("ProtocolName", "LO"),
    ("PresentationIntentType", "CS"),
    ("ConversionType", "CS"),
    ("SamplesPerPixel", "US"),
    ("NumberOfFrames", "IS"),
    ("ImageType", "CS"),
]
SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.13.1.3",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.88.22",
]


def rules_dataset(data: bytes) -> Dataset:
    """A dataset whose rule-relevant tags are cut from ``data`` (separator 0x00)."""
    fields = data.split(b"\x00")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SOP_CLASSES[(data[0] if data else 0) % len(SOP_CLASSES)]
    if len(data) > 1 and data[1] & 1:
        ds.PixelData = b"\x00\x00"
    for (keyword, vr), raw in zip(RULE_KEYWORDS, fields[1:], strict=False):
        text = raw.decode("latin-1")
        if vr == "US":
            ds.add_new(keyword, vr, int.from_bytes(raw[:2].ljust(2, b"\0"), "little"))
        elif vr == "IS":  # as read from a file: converted (and maybe failing) on access
            tag = Tag(keyword)
            ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
        else:
            ds.add_new(keyword, vr, text.split("\\") if vr == "CS" and "\\" in text else text)
    if len(fields) > len(RULE_KEYWORDS) + 1:
        item = Dataset()
        item.CodeValue = fields[-1][:16].decode("latin-1")
        item.CodingSchemeDesignator = "SCT"
        item.CodeMeaning = fields[-2][:64].decode("latin-1")
        ds.ViewCodeSequence = [item]
    return ds


def rules(data: bytes) -> None:
    from pydicom import config

    with config.disable_value_validation():
        ds = rules_dataset(data)
    classify(ds)  # a pure rule: never raises, whatever the tags say


# --- STOW-RS multipart parser ------------------------------------------------------------------
def multipart(data: bytes) -> None:
    boundary = "b" + str(data[0] if data else 0)
    cut = 1 + (data[1] if len(data) > 1 else 0)
    counter = iter(range(10**9))

    def new_file() -> Path:
        path = _TEMP / f"part{next(counter)}"
        path.touch()
        return path

    try:
        receiver = MultipartReceiver(boundary, new_file)
    except DicomWebError:
        return
    try:
        body = data[2:]
        for start in range(0, len(body), cut):
            receiver.feed(body[start : start + cut])
        receiver.finish()
    except DicomWebError:
        pass
    finally:
        receiver.cleanup()
        for leftover in _TEMP.glob("part*"):
            os.unlink(leftover)


TARGETS = {"header": header, "rules": rules, "multipart": multipart}
