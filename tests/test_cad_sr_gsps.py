"""Mammography CAD SR and GSPS of a scored exam: validated by dcmtk / dciodvfy, read back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.writers import OutputKind, build_outputs
from mammo_node.writers.identity import output_kinds_for, parse_destination_outputs
from tests.helpers.writers import NOW, ExamSpec, make_exam, make_inference

R_CC = Slot(Laterality.R, View.CC)
L_CC = Slot(Laterality.L, View.CC)
# dcmtk has no checker for TID 4000 itself and says so for every Mammography CAD SR
DCMTK_TEMPLATE_NOTE = "W: Check for template constraints not yet supported"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    exam = make_exam(ExamSpec(seed=11))
    outputs = build_outputs(exam, make_inference(exam), revision=1, station_name="AI1", now=NOW)
    folder = tmp_path_factory.mktemp("cad")
    paths = {}
    for slot, ds in exam.items():
        paths[f"mg_{slot}"] = folder / f"mg_{slot}.dcm"
        ds.save_as(paths[f"mg_{slot}"], enforce_file_format=True)
    for out in outputs:
        if out.kind in (OutputKind.CAD_SR, OutputKind.GSPS):
            paths[out.kind.value] = folder / f"{out.kind}.dcm"
            out.dataset.save_as(paths[out.kind.value], enforce_file_format=True)
    return paths


def _run(*args: str) -> str:
    assert shutil.which(args[0]), f"{args[0]} not installed (`make test` installs it)"
    run = subprocess.run(list(args), capture_output=True, text=True, errors="replace", check=False)
    return run.stdout + run.stderr


def test_cad_sr_passes_dciodvfy_and_dsrdump(written: dict[str, Path]) -> None:
    report = _run("dciodvfy", str(written["cad_sr"]))
    assert "MammographyCADSR" in report
    assert not [line for line in report.splitlines() if line.startswith(("Error", "Warning"))]
    dump = _run("dsrdump", str(written["cad_sr"]))
    notes = [line for line in dump.splitlines() if line[:2] in ("W:", "E:", "F:")]
    assert notes == [DCMTK_TEMPLATE_NOTE], notes
    assert "Mammography CAD SR Document" in dump
    # dcmtk's renderer reads it too (a reading-room report view)
    html = written["cad_sr"].with_suffix(".html")
    notes = _run("dsr2html", str(written["cad_sr"]), str(html)).strip().splitlines()
    text = html.read_text(encoding="latin-1")  # ISO_IR 100, as the source
    assert notes == [DCMTK_TEMPLATE_NOTE] and text.count("Selected region") >= 4


def _walk(items: pydicom.Sequence, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    for item in items:
        name = (
            item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        )
        yield (*path, name), item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence, (*path, name))


def test_cad_sr_reads_back_roi_coa_certainty_operating_point(written: dict[str, Path]) -> None:
    ds = pydicom.dcmread(written["cad_sr"])
    exam = {s: pydicom.dcmread(written[f"mg_{s}"]) for s in SLOTS}
    inference = make_inference(exam)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.50"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "111036"
    findings = [i for p, i in _walk(ds.ContentSequence) if p[-1] == "111059"]
    assert len(findings) == 4
    by_image = {}
    for finding in findings:
        props = {c.ConceptNameCodeSequence[0].CodeValue: c for c in finding.ContentSequence}
        centre, outline = props["111010"], props["111041"]
        uid = centre.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert uid == outline.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        intent = props["111056"]
        point = intent.ContentSequence[0]
        assert point.ConceptNameCodeSequence[0].CodeValue == "111071"
        certainty = float(props["111012"].MeasuredValueSequence[0].NumericValue)
        by_image[uid] = (
            tuple(float(v) for v in centre.GraphicData),
            np.asarray(outline.GraphicData, dtype=float).reshape(-1, 2),
            intent.ConceptCodeSequence[0].CodeValue,
            int(float(point.MeasuredValueSequence[0].NumericValue)),
            certainty,
            props["111001"].TextValue,
        )
    for slot in SLOTS:
        view = inference.views[slot]
        centre, outline, intent, op, certainty, algo = by_image[view.sop_instance_uid]
        assert centre == pytest.approx(view.coa)
        x0, y0, x1, y1 = view.roi
        assert (outline[:, 0].min(), outline[:, 1].min()) == (x0, y0)
        assert (outline[:, 0].max(), outline[:, 1].max()) == (x1, y1)
        assert 0.0 < certainty < 100.0 and algo == "mammo-demo"
        # right breast 2.75 + 1.5 >= threshold 2.5: presentation required, op 1 of 2
        if slot.laterality is Laterality.R:
            assert (intent, op) == ("111150", 1)
        else:
            assert (intent, op) == ("111151", 2)
    follow_up = [i for p, i in _walk(ds.ContentSequence) if p[-1] == "111053"]
    assert [f.ConceptCodeSequence[0].CodeValue for f in follow_up] == ["386053000"]
    params = [i.TextValue for p, i in _walk(ds.ContentSequence) if p[-1] == "111002"]
    assert "manifest_sha256=" + "ab" * 32 in params  # the bundle content hash


def test_gsps_passes_dcmpschk_and_renders_through_dcmp2pgm(
    written: dict[str, Path], tmp_path: Path
) -> None:
    check = _run("dcmpschk", str(written["gsps"]))
    assert "Test passed" in check and "E:" not in check
    report = _run("dciodvfy", str(written["gsps"]))
    assert not [line for line in report.splitlines() if line.startswith("Error")]
    image = written[f"mg_{R_CC}"]
    with_ps, without = tmp_path / "with.pgm", tmp_path / "without.pgm"
    _run("dcmp2pgm", "-p", str(written["gsps"]), str(image), str(with_ps))
    _run("dcmp2pgm", str(image), str(without))
    assert with_ps.stat().st_size > 1000
    # display geometry and grey levels untouched: the image renders the same through the state
    assert with_ps.read_bytes() == without.read_bytes()


def test_gsps_reads_back_box_coa_and_score_per_view(written: dict[str, Path]) -> None:
    ds = pydicom.dcmread(written["gsps"])
    exam = {s: pydicom.dcmread(written[f"mg_{s}"]) for s in SLOTS}
    inference = make_inference(exam)
    refs = {
        i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedImageSequence
    }
    assert refs == {v.sop_instance_uid for v in inference.views.values()}
    assert [layer.GraphicLayer for layer in ds.GraphicLayerSequence] == ["ROI", "COA", "SCORE"]
    seen: dict[tuple[str, str], object] = {}
    for annotation in ds.GraphicAnnotationSequence:
        uid = annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        seen[uid, annotation.GraphicLayer] = annotation
    for slot in SLOTS:
        view = inference.views[slot]
        box = seen[view.sop_instance_uid, "ROI"].GraphicObjectSequence[0]
        data = np.asarray(box.GraphicData, dtype=float).reshape(-1, 2)
        assert box.GraphicAnnotationUnits == "PIXEL"
        assert tuple(data.min(axis=0)) == view.roi[:2] and tuple(data.max(axis=0)) == view.roi[2:]
        cross = seen[view.sop_instance_uid, "COA"].GraphicObjectSequence
        mid = np.asarray(cross[0].GraphicData, dtype=float).reshape(-1, 2).mean(axis=0)
        assert tuple(mid) == pytest.approx(view.coa, abs=1.0)
        text = seen[view.sop_instance_uid, "SCORE"].TextObjectSequence[0].UnformattedTextValue
        assert str(slot) in text and f"{view.ensemble:.2f}" in text and "DEMO" in text
    assert int(ds.get("ImageRotation", 0)) == 0 and ds.get("ImageHorizontalFlip", "N") == "N"


def test_destination_output_kinds() -> None:
    assert output_kinds_for("tid1500,sc,seg") == {"sr", "sr_view", "sc", "seg", "kos"}
    assert output_kinds_for(" cad-sr , gsps ") == {"cad_sr", "gsps", "kos"}
    assert parse_destination_outputs("gsps,gsps,sc") == ["gsps", "sc"]
    with pytest.raises(ValueError, match="Unknown output kind 'pdf'"):
        parse_destination_outputs("sc,pdf")
    with pytest.raises(ValueError, match="at least one"):
        parse_destination_outputs(" , ")


def test_cad_sr_operating_point_choice_and_calibrated_probability() -> None:
    exam = make_exam(ExamSpec(seed=12))
    inference = make_inference(exam)
    inference.probability = 0.42
    inference.bundle = type(inference.bundle)(
        **{
            **inference.bundle.__dict__,
            "operating_points": (
                type(inference.bundle.operating_points[0])("high_specificity", 5.0, 0.6, 0.99),
                type(inference.bundle.operating_points[0])("high_sensitivity", 1.0, 0.95, 0.8),
            ),
        }
    )
    by_name = {}
    outputs = build_outputs(
        exam, inference, revision=1, cad_operating_points=(None, "high_sensitivity")
    )
    cads = {o.operating_point: o.dataset for o in outputs if o.kind is OutputKind.CAD_SR}
    assert list(cads) == ["high_specificity", "high_sensitivity"]  # None = the bundle's first
    assert len({ds.SOPInstanceUID for ds in cads.values()}) == 2
    for name, cad in cads.items():
        intents = [
            i.ConceptCodeSequence[0].CodeValue
            for p, i in _walk(cad.ContentSequence)
            if p[-1] == "111056"
        ]
        by_name[name] = intents
        probability = [i for p, i in _walk(cad.ContentSequence) if p[-1] == "111047"]
        assert [float(i.MeasuredValueSequence[0].NumericValue) for i in probability] == [42.0]
    # breast scores L -0.75, R 4.25: above the sensitive point only the right breast ...
    assert by_name["high_sensitivity"].count("111150") == 1 + 2  # R impression + its 2 findings
    # ... and above the specific point (5.0) none: every mark is optional
    assert set(by_name["high_specificity"]) == {"111151"}
    with pytest.raises(Exception, match="not one of the bundle's"):
        build_outputs(exam, inference, revision=1, cad_operating_points=["nope"])


def test_views_of_different_sizes_get_one_presentation_state(tmp_path: Path) -> None:
    """Real exams store CC and MLO at different sizes; each keeps its own displayed area."""
    exam = make_exam(ExamSpec(seed=13))
    small = make_exam(
        ExamSpec(seed=13, rows=240, columns=200, study_uid=exam[L_CC].StudyInstanceUID)
    )
    exam[R_CC] = small[R_CC]
    exam[R_CC].PatientOrientation = ["P", "L"]
    outputs = build_outputs(exam, make_inference(exam), revision=1)
    (gsps,) = [o.dataset for o in outputs if o.kind is OutputKind.GSPS]
    areas = {
        a.ReferencedImageSequence[0].ReferencedSOPInstanceUID: list(
            a.DisplayedAreaBottomRightHandCorner
        )
        for a in gsps.DisplayedAreaSelectionSequence
    }
    assert areas[exam[R_CC].SOPInstanceUID] == [200, 240]
    assert areas[exam[L_CC].SOPInstanceUID] == [208, 256]
    assert exam[R_CC].Rows == 240  # the sources are untouched
    path = tmp_path / "gsps.dcm"
    gsps.save_as(path, enforce_file_format=True)
    assert "Test passed" in _run("dcmpschk", str(path))
    assert not [ln for ln in _run("dciodvfy", str(path)).splitlines() if ln.startswith("Error")]


def test_a_monochrome1_exam_renders_the_same_through_the_presentation_state(
    tmp_path: Path,
) -> None:
    exam = make_exam(ExamSpec(photometric="MONOCHROME1", seed=14))
    outputs = build_outputs(exam, make_inference(exam), revision=1)
    (gsps,) = [o.dataset for o in outputs if o.kind is OutputKind.GSPS]
    assert gsps.PresentationLUTShape == "INVERSE"
    state, image = tmp_path / "gsps.dcm", tmp_path / "mg.dcm"
    gsps.save_as(state, enforce_file_format=True)
    exam[L_CC].save_as(image, enforce_file_format=True)
    _run("dcmp2pgm", "-p", str(state), str(image), str(tmp_path / "with.pgm"))
    _run("dcmp2pgm", str(image), str(tmp_path / "without.pgm"))
    assert (tmp_path / "with.pgm").read_bytes() == (tmp_path / "without.pgm").read_bytes()
