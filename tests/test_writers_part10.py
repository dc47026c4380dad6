"""The outputs' Part-10 files (mammo_node.writers.part10): the bytes pydicom's dcmwrite
writes, for every output kind and character set, and pydicom itself for what the one-pass
framing does not cover."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence
from pydicom.uid import ComprehensiveSRStorage, ImplicitVRLittleEndian

from mammo_node.writers import build_outputs
from mammo_node.writers.identity import OutputKind, ReferencedDocument
from mammo_node.writers.part10 import _NotFramedHere, _part10_parts, part10_bytes, write_part10
from tests.helpers.writers import ExamSpec, make_exam, make_inference


def pydicom_bytes(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "spec",
    [
        ExamSpec(),  # ISO_IR 100, a name with an umlaut
        ExamSpec(charset="ISO_IR 192", patient_name="山田^花子", photometric="MONOCHROME1"),
        ExamSpec(frame_of_reference=False, rows=300, columns=170),
    ],
    ids=["latin-1", "utf-8 MONOCHROME1", "no frame of reference"],
)
def test_every_output_is_written_byte_for_byte_as_pydicom_writes_it(
    spec: ExamSpec, tmp_path: Path
) -> None:
    exam = make_exam(spec)
    first = build_outputs(exam, make_inference(exam), revision=1)
    previous = ReferencedDocument(
        spec.study_uid, "2.25.1", "2.25.11", ComprehensiveSRStorage
    )  # a rerun: predecessor documents, and a rejection note for the old images
    withdrawn = [
        ReferencedDocument(
            o.dataset.StudyInstanceUID, o.series_instance_uid, o.sop_instance_uid, o.sop_class_uid
        )
        for o in first
        if o.kind in (OutputKind.SC, OutputKind.SEG, OutputKind.GSPS)
    ]
    outputs = first + build_outputs(
        exam,
        make_inference(exam),
        revision=2,
        previous_sr=[previous],
        withdrawn=withdrawn,
        cad_operating_points=[None, "recall"],
    )
    kinds = {o.kind for o in outputs}
    assert kinds == set(OutputKind), f"every kind is checked, got {sorted(kinds)}"
    for n, obj in enumerate(outputs):
        expected = pydicom_bytes(deepcopy(obj.dataset))  # before either resolves a VR in place
        _part10_parts(obj.dataset)  # framed here, not handed to pydicom
        assert part10_bytes(obj.dataset) == expected, obj.kind
        path = tmp_path / f"{n}.dcm"
        write_part10(obj.dataset, path)
        assert path.read_bytes() == expected, obj.kind
        pydicom.dcmread(path).decode()  # and it reads back, values decoded


def _sr(**changes: object) -> Dataset:
    """One output SR of a small exam, to be changed into what the framing leaves to pydicom."""
    exam = make_exam(ExamSpec())
    outputs = build_outputs(exam, make_inference(exam), revision=1)
    return next(o.dataset for o in outputs if o.kind is OutputKind.SR)


def _implicit(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _undefined_length(ds: Dataset) -> None:
    ds["ContentSequence"].is_undefined_length = True


def _long_short_value(ds: Dataset) -> None:
    ds.add(DataElement(0x00091010, "LO", "x" * 70_000))  # private, over a 2-byte length


def _raw(ds: Dataset) -> None:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    read = pydicom.dcmread(pydicom.filebase.DicomBytesIO(buffer.getvalue()))
    ds.clear()
    ds.update(read)  # elements still raw: as read from a file, never decoded


def _undefined_item(ds: Dataset) -> None:
    item = Dataset()
    item.is_undefined_length_sequence_item = True
    item.CodeValue = "1"
    ds.add(DataElement(0x00081032, "SQ", Sequence([item])))


@pytest.mark.filterwarnings("ignore:The value:UserWarning")  # pydicom on the 70 000-byte LO
@pytest.mark.parametrize(
    "change",
    [_implicit, _undefined_length, _long_short_value, _raw, _undefined_item],
)
def test_what_the_framing_does_not_cover_is_written_by_pydicom(
    change: object, tmp_path: Path
) -> None:
    ds = _sr()
    change(ds)  # type: ignore[operator]
    expected = pydicom_bytes(deepcopy(ds))
    with pytest.raises(_NotFramedHere):
        _part10_parts(ds)
    path = tmp_path / "out.dcm"
    write_part10(ds, path)
    assert path.read_bytes() == expected


def test_an_ambiguous_vr_is_resolved_as_pydicom_resolves_it(tmp_path: Path) -> None:
    ds = _sr()
    item = Dataset()  # in an item: resolved from the item's ancestors, as pydicom does
    item.add(DataElement(0x00280106, "US or SS", -5))  # SmallestImagePixelValue
    ds.PixelRepresentation = 1
    ds.add(DataElement(0x00081032, "SQ", Sequence([item])))
    expected = pydicom_bytes(deepcopy(ds))
    write_part10(ds, tmp_path / "out.dcm")
    assert (tmp_path / "out.dcm").read_bytes() == expected
    assert ds[0x00081032].value[0][0x00280106].VR == "SS"
    unsigned = _sr()  # no PixelRepresentation anywhere: pydicom's rule then says US
    item = Dataset()
    item.add(DataElement(0x00280106, "US or SS", 5))
    unsigned.add(DataElement(0x00081032, "SQ", Sequence([item])))
    expected = pydicom_bytes(deepcopy(unsigned))
    write_part10(unsigned, tmp_path / "unsigned.dcm")
    assert (tmp_path / "unsigned.dcm").read_bytes() == expected
    assert item[0x00280106].VR == "US"


def test_a_dataset_pydicom_refuses_is_refused_alike(tmp_path: Path) -> None:
    ds = _sr()
    ds.add(DataElement(0x00020010, "UI", ImplicitVRLittleEndian))  # meta in the data set
    with pytest.raises(ValueError, match="File Meta Information Group"):
        write_part10(ds, tmp_path / "out.dcm")


def test_retired_group_lengths_are_left_out_as_pydicom_leaves_them(tmp_path: Path) -> None:
    ds = _sr()
    ds.add(DataElement(0x00080000, "UL", 1234))  # a group length an old dataset carried
    expected = pydicom_bytes(deepcopy(ds))
    _part10_parts(ds)  # framed here
    write_part10(ds, tmp_path / "out.dcm")
    assert (tmp_path / "out.dcm").read_bytes() == expected
    assert 0x00080000 not in pydicom.dcmread(tmp_path / "out.dcm")


def test_binary_values_are_written_verbatim_and_padded_as_pydicom_pads_them(
    tmp_path: Path,
) -> None:
    ds = _sr()
    ds.add(DataElement(0x00091011, "OB", b"\x01\x02\x03"))  # odd: a pad byte follows
    ds.add(DataElement(0x00091013, "OW", b"\x06\x07\x08\x09"))
    expected = pydicom_bytes(deepcopy(ds))
    _part10_parts(ds)
    write_part10(ds, tmp_path / "out.dcm")
    assert (tmp_path / "out.dcm").read_bytes() == expected
    assert pydicom.dcmread(tmp_path / "out.dcm")[0x00091011].value == b"\x01\x02\x03\x00"
