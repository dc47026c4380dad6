"""Result writers: SR / SC / SEG of a scored 4-view exam, validated with dciodvfy and read back."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    MammographyCADSRStorage,
)

import mammo_node
from mammo_node.domain import SLOTS, Laterality, SaliencyMap, Slot, View
from mammo_node.errors import OutputError
from mammo_node.writers import (
    OutputKind,
    OutputObject,
    ReferencedDocument,
    build_outputs,
    codes,
    output_uid,
    read_report,
    sop_classes_for_outputs,
)
from mammo_node.writers.display import block_mean, scale_factor
from mammo_node.writers.identity import plan_identities
from mammo_node.writers.saliency_grid import BlockSampler, on_blocks, salient_mask, top_mask
from mammo_node.writers.sc import BOX_RGB, COA_RGB, DEFAULT_MAX_PIXELS, DEMO_RGB, box_in_sc
from mammo_node.writers.sources import contributing_equipment, copy_identity, scored_views
from mammo_node.writers.sr import ReportContext, index_view
from mammo_node.writers.sr_document import sr_document
from tests.helpers.tools import dciodvfy
from tests.helpers.writers import (
    NOW,
    ExamSpec,
    demo_bundle,
    gaussian_saliency,
    make_exam,
    make_inference,
    synth_exam,
)

L_CC, L_MLO, R_CC, R_MLO = SLOTS
ALLOWED_WARNING = re.compile(
    r"Warning - Unrecognized defined term <99MNODE> for value 1 of attribute "
    r"<Coding Scheme Designator>"
    # the presentation state covers both breasts: Laterality (paired organ) is empty
    r"|Warning - is only permitted to be empty when actually unknown; should be absent \(not "
    r"empty\) if an unpaired body part, and have a value if a paired body part - attribute "
    r"<Laterality>"
)


@pytest.fixture(autouse=True)
def strict_pydicom() -> Iterator[None]:
    """Read and write with validation errors raised, as highdicom's own tests do."""
    settings = pydicom_config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = pydicom_config.RAISE
    settings.writing_validation_mode = pydicom_config.RAISE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = saved


@pytest.fixture(scope="module")
def exam() -> dict[Slot, pydicom.Dataset]:
    return make_exam(ExamSpec(rle_slots=(L_MLO,)))  # one source RLE-compressed


@pytest.fixture(scope="module")
def outputs(exam: dict[Slot, pydicom.Dataset]) -> list[OutputObject]:
    return build_outputs(exam, make_inference(exam), revision=1, now=NOW, station_name="AI1")


@pytest.fixture(scope="module")
def written(outputs: list[OutputObject], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("outputs")
    paths = []
    for out in outputs:
        path = folder / f"{out.kind}_{out.slot or 'exam'}.dcm"
        out.dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def one(outputs: list[OutputObject], kind: OutputKind, slot: Slot | None) -> pydicom.Dataset:
    (match,) = [o.dataset for o in outputs if o.kind is kind and o.slot == slot]
    return match


def roundtrip(dataset: pydicom.Dataset, tmp_path: Path) -> pydicom.Dataset:
    path = tmp_path / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


# ---------------------------------------------------------------------------------------------
# objects, series, identity
# ---------------------------------------------------------------------------------------------


def test_one_exam_report_and_per_view_sr_sc_seg(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    kinds = [(o.kind, o.slot) for o in outputs]
    assert kinds[0] == (OutputKind.SR, None)
    for kind in (OutputKind.SR_VIEW, OutputKind.SC, OutputKind.SEG):
        assert [s for k, s in kinds if k is kind] == list(SLOTS)
    assert kinds[-2:] == [(OutputKind.CAD_SR, None), (OutputKind.GSPS, None)]
    study = exam[L_CC].StudyInstanceUID
    source_series = {ds.SeriesInstanceUID for ds in exam.values()}
    for out in outputs:
        ds = out.dataset
        assert ds.StudyInstanceUID == study
        assert ds.SeriesInstanceUID not in source_series
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        assert str(ds.PatientName) == "Müller^Anna"
        assert (ds.PatientID, ds.AccessionNumber, ds.StudyID) == ("WRT-0001", "ACC42", "S1")
        assert str(ds.StudyDate) == "20261120" and ds.PatientSex == "F"
        assert ds.StationName == "AI1"
    made = {o.sop_class_uid for o in outputs}  # a rejection note only comes with a rescore
    assert set(sop_classes_for_outputs()) - made == {"1.2.840.10008.5.1.4.1.1.88.59"}


def test_series_numbers_and_instance_numbers(outputs: list[OutputObject]) -> None:
    by_kind: dict[OutputKind, list[tuple[int, int, str]]] = {}
    for o in outputs:
        by_kind.setdefault(o.kind, []).append(
            (int(o.dataset.SeriesNumber), int(o.dataset.InstanceNumber), o.series_instance_uid)
        )
    assert by_kind[OutputKind.SR] == [(9100, 1, by_kind[OutputKind.SR][0][2])]
    assert [(s, i) for s, i, _ in by_kind[OutputKind.SR_VIEW]] == [
        (9101 + k, k + 1) for k in range(4)
    ]
    assert [(s, i) for s, i, _ in by_kind[OutputKind.SEG]] == [(9301 + k, k + 1) for k in range(4)]
    assert [(s, i) for s, i, _ in by_kind[OutputKind.SC]] == [(9200, k + 1) for k in range(4)]
    assert len({u for _, _, u in by_kind[OutputKind.SC]}) == 1  # one SC series
    per_view_series = [u for k in (OutputKind.SR_VIEW, OutputKind.SEG) for _, _, u in by_kind[k]]
    assert len(set(per_view_series)) == 8  # every per-view SR and SEG in its own series
    descriptions = [o.dataset.SeriesDescription for o in outputs if o.kind is not OutputKind.SC]
    assert len(set(descriptions)) == len(descriptions)  # OHIF matches SRs by description


def test_uids_are_deterministic_per_study_bundle_revision(
    exam: dict[Slot, pydicom.Dataset], outputs: list[OutputObject]
) -> None:
    inference = make_inference(exam)
    again = build_outputs(exam, inference, revision=1)
    uids = [(o.series_instance_uid, o.sop_instance_uid) for o in outputs]
    assert [(o.series_instance_uid, o.sop_instance_uid) for o in again] == uids
    later = build_outputs(exam, inference, revision=2)
    assert not {u for pair in uids for u in pair} & {
        u for o in later for u in (o.series_instance_uid, o.sop_instance_uid)
    }
    # keyed on the bundle's content (manifest sha256), not on its version string
    other_weights = make_inference(exam, bundle=demo_bundle())
    other_weights.bundle = type(other_weights.bundle)(
        **{**other_weights.bundle.__dict__, "manifest_sha256": "cd" * 32}
    )
    assert build_outputs(exam, other_weights, revision=1)[0].sop_instance_uid != uids[0][1]
    renamed = make_inference(exam, bundle=demo_bundle())
    renamed.bundle = type(renamed.bundle)(**{**renamed.bundle.__dict__, "version": "0.2.0"})
    assert build_outputs(exam, renamed, revision=1)[0].sop_instance_uid == uids[0][1]
    uid = output_uid(exam[L_CC].StudyInstanceUID, "sha256:" + "ab" * 32, 1, "sr", None)
    assert uid == outputs[0].sop_instance_uid
    assert re.fullmatch(r"2\.25\.[1-9]\d*", uid) and len(uid) <= 64
    all_uids = [u for pair in uids for u in pair]
    sc_series = {o.series_instance_uid for o in outputs if o.kind is OutputKind.SC}
    assert len(set(all_uids)) == len(all_uids) - (len(SLOTS) - len(sc_series))


_CLOCK = {
    "InstanceCreationTime",
    "TimeOfSecondaryCapture",
    "ContributionDateTime",
    "DimensionOrganizationUID",
}


def _without_clock(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """A copy without the times highdicom stamps when it builds an object (and the random UID
    it gives a SEG's dimension organisation)."""
    copy = pydicom.Dataset()
    for element in dataset:
        if element.keyword in _CLOCK:
            continue
        if element.VR == "SQ":
            copy.add_new(element.tag, "SQ", [_without_clock(item) for item in element.value])
        else:
            copy.add(element)
    return copy


def test_two_threads_build_the_same_objects_as_one(
    exam: dict[Slot, pydicom.Dataset], outputs: list[OutputObject]
) -> None:
    """The pixel objects built beside the documents: same objects, same order, same values."""
    both = build_outputs(
        exam, make_inference(exam), revision=1, now=NOW, station_name="AI1", threads=2
    )
    assert [(o.kind, o.slot, o.operating_point) for o in both] == [
        (o.kind, o.slot, o.operating_point) for o in outputs
    ]
    for serial, parallel in zip(outputs, both, strict=True):
        assert _without_clock(parallel.dataset) == _without_clock(serial.dataset), serial.kind
    # an error in the pixel thread is the same clear OutputError
    with pytest.raises(OutputError, match="max_pixels"):
        build_outputs(exam, make_inference(exam), revision=1, sc_max_pixels=0, threads=2)
    with pytest.raises(OutputError, match="threads"):
        build_outputs(exam, make_inference(exam), revision=1, threads=0)


# ---------------------------------------------------------------------------------------------
# validation: dciodvfy and strict read-back
# ---------------------------------------------------------------------------------------------


def test_every_output_passes_dciodvfy(written: list[Path]) -> None:
    for path in written:
        lines = dciodvfy(path)
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
        warnings = [line for line in lines if line.startswith("Warning")]
        unexpected = [w for w in warnings if not ALLOWED_WARNING.fullmatch(w)]
        assert not unexpected, f"{path.name}: {unexpected}"


def _content_root(document: pydicom.Dataset) -> pydicom.Dataset:
    root = pydicom.Dataset()
    for keyword in ("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent"):
        root[keyword] = copy.deepcopy(document[keyword])
    for keyword in ("ContentTemplateSequence", "ContentSequence"):
        if keyword in document:
            root[keyword] = copy.deepcopy(document[keyword])
    return root


def _without_creation_times(dataset: pydicom.Dataset) -> dict[str, object]:
    """The dataset as DICOM JSON without the moments it was made (they differ per build)."""
    made = dataset.to_json_dict()
    for keyword in ("InstanceCreationDate", "InstanceCreationTime"):
        made.pop(f"{pydicom.datadict.tag_for_keyword(keyword):08X}", None)
    for item in made.get("0018A001", {}).get("Value", []):  # ContributingEquipmentSequence
        item.pop("0018A002", None)  # its Contribution DateTime
    return made


def test_the_reports_carry_what_highdicoms_sr_constructor_writes(
    exam: dict[Slot, pydicom.Dataset],
) -> None:
    """sr_document writes the document modules itself (highdicom's constructor re-parses the
    whole tree: most of the writers' time); on the same content, highdicom's ComprehensiveSR
    must give the same dataset, predecessors, institution and station included."""
    inference = make_inference(exam)
    previous = ReferencedDocument(
        inference.study_uid,
        "1.2.826.0.1.3680043.8.498.1",
        "1.2.826.0.1.3680043.8.498.2",
        ComprehensiveSRStorage,
    )
    outputs = build_outputs(
        exam,
        inference,
        revision=2,
        now=NOW,
        previous_sr=[previous],
        institution_name="Breast Centre",
        station_name="AI1",
    )
    sources = {ds.SOPInstanceUID: ds for ds in exam.values()}
    bundle = inference.bundle
    reports = [o for o in outputs if o.kind in (OutputKind.SR, OutputKind.SR_VIEW)]
    assert len(reports) == 5
    for report in reports:
        ours = report.dataset
        evidence = [
            sources[instance.ReferencedSOPInstanceUID]
            for study in ours.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for instance in series.ReferencedSOPSequence
        ]
        predecessor = pydicom.Dataset()
        predecessor.StudyInstanceUID = previous.study_instance_uid
        predecessor.SeriesInstanceUID = previous.series_instance_uid
        predecessor.SOPInstanceUID = previous.sop_instance_uid
        predecessor.SOPClassUID = previous.sop_class_uid
        theirs = hd.sr.ComprehensiveSR(
            evidence=evidence,
            content=_content_root(ours),
            series_instance_uid=ours.SeriesInstanceUID,
            series_number=ours.SeriesNumber,
            sop_instance_uid=ours.SOPInstanceUID,
            instance_number=ours.InstanceNumber,
            manufacturer=codes.MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name="Breast Centre",
            previous_versions=[predecessor],
            transfer_syntax_uid=ExplicitVRLittleEndian,
            contributing_equipment=[
                contributing_equipment(bundle, institution_name="Breast Centre", station_name="AI1")
            ],
            series_description=ours.SeriesDescription,
            coding_schemes=[codes.LOCAL_SCHEME_ITEM],
            manufacturer_model_name=codes.MANUFACTURER,
            software_versions=mammo_node.__version__,
            content_date=NOW.date(),
            content_time=NOW.time(),
            series_date=NOW.date(),
            series_time=NOW.time(),
        )
        theirs.StationName = "AI1"
        theirs.PertinentOtherEvidenceSequence = ours.PertinentOtherEvidenceSequence
        copy_identity(theirs, evidence[0], is_sr=True)  # as build_outputs does for every output
        assert _without_creation_times(ours) == _without_creation_times(theirs), report.kind


def test_a_report_on_an_image_not_given_is_refused(
    exam: dict[Slot, pydicom.Dataset],
) -> None:
    inference = make_inference(exam)
    outputs = build_outputs(exam, inference, revision=0, now=NOW)
    view_report = one(outputs, OutputKind.SR_VIEW, L_CC)
    views = scored_views(exam, inference)
    other = next(v for v in views if v.slot != L_CC)
    ctx = ReportContext(
        inference=inference,
        revision=0,
        previous=(),
        plan=plan_identities(inference.study_uid, inference.bundle, 0, [v.slot for v in views]),
        institution_name=None,
        station_name=None,
        now=NOW,
    )
    with pytest.raises(OutputError, match="not its source images"):
        sr_document(
            _content_root(view_report),
            sop_class_uid=ComprehensiveSRStorage,
            views=[other],
            identity=ctx.plan[OutputKind.SR_VIEW, L_CC],
            ctx=ctx,
        )


def test_strict_read_back_with_highdicom(written: list[Path]) -> None:
    for path in written:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        if ds.SOPClassUID == MammographyCADSRStorage:
            assert ds.ContentTemplateSequence[0].TemplateIdentifier == "4000"
        elif ds.Modality == "PR":
            assert ds.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage
            assert len(ds.ReferencedSeriesSequence[0].ReferencedImageSequence) == 4
        elif ds.Modality == "SR":
            sr = hd.sr.srread(path)
            assert isinstance(sr, hd.sr.ComprehensiveSR)
            assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
            assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
        elif ds.Modality == "SEG":
            seg = hd.seg.segread(path)
            assert seg.SegmentationType == "BINARY"
        else:
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns, 3)


# ---------------------------------------------------------------------------------------------
# SR content
# ---------------------------------------------------------------------------------------------


def test_view_reports_put_roi_coa_and_score_on_their_image(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset], tmp_path: Path
) -> None:
    inference = make_inference(exam)
    for slot in SLOTS:
        view = inference.views[slot]
        reading = read_report(roundtrip(one(outputs, OutputKind.SR_VIEW, slot), tmp_path))
        uid = exam[slot].SOPInstanceUID
        assert reading.boxes == {uid: tuple(float(v) for v in view.roi)}
        assert reading.centres == {uid: pytest.approx(view.coa)}
        assert reading.box_scores == {uid: pytest.approx(view.ensemble)}
        assert reading.unit == "{score}"
    # the mirrored right breast keeps its stored-grid position: near the right (chest wall) edge
    assert inference.views[R_CC].roi[0] > exam[R_CC].Columns * 0.5
    assert inference.views[L_CC].roi[2] < exam[L_CC].Columns * 0.5


def test_view_report_structure(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    bundle = demo_bundle()
    sr = hd.sr.ComprehensiveSR.from_dataset(one(outputs, OutputKind.SR_VIEW, R_MLO))
    report = sr.content
    groups = report.get_planar_roi_measurement_groups()
    # one group per view: OHIF merges nothing and hydrates the box as a RectangleROI
    (group,) = groups
    assert group.roi.graphic_type.value == "POLYLINE"
    box = group.roi.value
    assert np.array_equal(box[0], box[-1])  # closed polyline
    purpose = next(i.value.value for i in group[0].ContentSequence if i.name.value == "130400")
    assert purpose == "75958009"  # Bounded by
    # the score is INFERRED FROM the box and the centre (DCM 111010), both on the image
    num = next(i for i in group[0].ContentSequence if i.ValueType == "NUM")
    inferred = {
        c.ConceptNameCodeSequence[0].CodeValue: c.GraphicType
        for c in num.ContentSequence
        if c.RelationshipType == "INFERRED FROM"
    }
    assert inferred == {"111030": "POLYLINE", "111010": "POINT"}
    for c in num.ContentSequence:
        if c.ValueType == "SCOORD":
            (ref,) = c.ContentSequence
            assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
                exam[R_MLO].SOPInstanceUID
            )
    (comment,) = [
        i for i in group[0].ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121106"
    ]
    assert comment.TextValue == "Cancer score (uncalibrated logit difference): 1.50 {score}"
    for group in groups:
        assert group.tracking_identifier and group.tracking_uid
        (site,) = group.finding_sites
        assert site.value.value == "76752008"
        assert site.laterality.value == "24028007"  # Right
        algo = {
            i.name.value: i.value
            for i in group[0].ContentSequence
            if i.name.value in ("111001", "111003")
        }
        assert algo == {"111001": bundle.name, "111003": bundle.version}
    (score,) = groups[0].get_measurements()
    assert score.name.value == "CANCERSCORE" and score.unit.value == "{score}"
    (device,) = report.get_observer_contexts(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device")
    )
    assert device.observer_identifying_attributes.uid == bundle.device_uid
    (equipment,) = [
        e
        for e in sr.ContributingEquipmentSequence
        if e.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
        and e.Manufacturer == "mammo-node"
    ]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == ("mammo-demo", "0.1.0")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    refs = {i.ReferencedSOPInstanceUID for s in evidence for i in s.ReferencedSOPSequence}
    assert refs == {exam[R_MLO].SOPInstanceUID}
    library = _image_library(sr)
    assert library == {exam[R_MLO].SOPInstanceUID: ("24028007", "399368009")}


def _image_library(sr: pydicom.Dataset) -> dict[str, tuple[str, str]]:
    """SOP UID -> (laterality code, view code) from the TID 1600 image library."""
    (library,) = [
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"
    ]
    found = {}
    for group in library.ContentSequence:
        for image in group.ContentSequence:
            if image.ValueType != "IMAGE":
                continue
            codes = {
                d.ConceptNameCodeSequence[0].CodeValue: d.ConceptCodeSequence[0].CodeValue
                for d in image.ContentSequence
                if d.ValueType == "CODE"
            }
            found[image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID] = (
                codes["111027"],
                codes["111031"],
            )
    return found


def test_exam_report_scores_verdict_and_index_view(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset], tmp_path: Path
) -> None:
    inference = make_inference(exam)
    ds = roundtrip(one(outputs, OutputKind.SR, None), tmp_path)
    reading = read_report(ds)
    scores = inference.scores
    expected = {f"{s} image score": v.ensemble for s, v in inference.views.items()}
    expected |= {f"breast {lat.value} score": v for lat, v in scores.breast_scores.items()}
    expected["exam score"] = scores.exam_score
    assert reading.scores == pytest.approx(expected)
    # index view = R-CC: highest view of the right breast, which sets the exam score
    index = inference.views[R_CC]
    assert index_view(scored_views(exam, inference), inference).slot == R_CC
    assert reading.boxes == {index.sop_instance_uid: tuple(float(v) for v in index.roi)}
    assert reading.centres == {index.sop_instance_uid: pytest.approx(index.coa)}
    assert any(
        t.startswith("Recall suggested at recall: exam score 4.25 >= threshold 2.50")
        for t in reading.texts
    )
    assert any("uncalibrated" in t and "logit" in t for t in reading.texts)
    assert _image_library(ds) == {
        exam[s].SOPInstanceUID: (
            ("7771000", "24028007")[s.laterality is Laterality.R],
            ("399162004", "399368009")[s.view is View.MLO],
        )
        for s in SLOTS
    }
    siblings = ds.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence
    listed = {i.ReferencedSOPInstanceUID for s in siblings for i in s.ReferencedSOPSequence}
    assert listed == {o.sop_instance_uid for o in outputs[1:]}


def test_view_report_lists_exam_report_and_its_view_outputs(outputs: list[OutputObject]) -> None:
    ds = one(outputs, OutputKind.SR_VIEW, L_CC)
    siblings = ds.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence
    listed = {i.ReferencedSOPInstanceUID for s in siblings for i in s.ReferencedSOPSequence}
    wanted = {o.sop_instance_uid for o in outputs if o.slot == L_CC or o.kind is OutputKind.SR}
    assert listed == wanted - {ds.SOPInstanceUID}


def test_tracking_uids_are_unique_across_documents(outputs: list[OutputObject]) -> None:
    """OHIF keys annotations by Tracking UID: a UID in two SRs of one study hides one of them."""
    seen: list[str] = []
    for out in outputs:
        if out.kind not in (OutputKind.SR, OutputKind.SR_VIEW):
            continue
        for group in hd.sr.ComprehensiveSR.from_dataset(
            out.dataset
        ).content.get_planar_roi_measurement_groups():
            seen.append(group.tracking_uid)
    assert len(seen) == len(set(seen)) == 5  # one region group per report


def test_predecessor_documents(exam: dict[Slot, pydicom.Dataset]) -> None:
    study = exam[L_CC].StudyInstanceUID
    old_exam = ReferencedDocument(study, "2.25.1", "2.25.11", "1.2.840.10008.5.1.4.1.1.88.33")
    old_lcc = ReferencedDocument(study, "2.25.2", "2.25.12", "1.2.840.10008.5.1.4.1.1.88.33", L_CC)
    old_rcc = ReferencedDocument(study, "2.25.3", "2.25.13", "1.2.840.10008.5.1.4.1.1.88.33", R_CC)
    outputs = build_outputs(
        exam, make_inference(exam), revision=2, previous_sr=[old_exam, old_lcc, old_rcc]
    )

    def predecessors(ds: pydicom.Dataset) -> set[str]:
        return {
            i.ReferencedSOPInstanceUID
            for study_item in ds.PredecessorDocumentsSequence
            for s in study_item.ReferencedSeriesSequence
            for i in s.ReferencedSOPSequence
        }

    assert predecessors(one(outputs, OutputKind.SR, None)) == {"2.25.11", "2.25.12", "2.25.13"}
    assert predecessors(one(outputs, OutputKind.SR_VIEW, L_CC)) == {"2.25.11", "2.25.12"}
    assert predecessors(one(outputs, OutputKind.SR_VIEW, L_MLO)) == {"2.25.11"}
    first = build_outputs(exam, make_inference(exam), revision=1)
    assert "PredecessorDocumentsSequence" not in first[0].dataset


def test_probability_bundle_reports_probability_of_cancer_in_percent(
    exam: dict[Slot, pydicom.Dataset],
) -> None:
    """View scores are probabilities (DCM 111047, %); breast and exam scores are sums of two
    of them - above 1 here - and are labelled as such, never as a probability."""
    inference = make_inference(exam, bundle=demo_bundle(score_kind="probability", is_demo=False))
    breast = {
        lat: sum(v.ensemble for s, v in inference.views.items() if s.laterality is lat)
        for lat in (Laterality.L, Laterality.R)
    }
    inference.scores = type(inference.scores)(breast_scores=breast, exam_score=max(breast.values()))
    assert inference.scores.exam_score > 1.0  # 0.9 + 0.7
    outputs = build_outputs(exam, inference, revision=1)
    sr = hd.sr.ComprehensiveSR.from_dataset(one(outputs, OutputKind.SR_VIEW, R_CC))
    (score,) = sr.content.get_planar_roi_measurement_groups()[0].get_measurements()
    assert (score.name.value, score.name.scheme_designator, score.unit.value) == (
        "111047",
        "DCM",
        "%",
    )
    assert score.value == pytest.approx(90.0)
    ds = one(outputs, OutputKind.SR, None)
    reading = read_report(ds)
    assert reading.scores["exam score"] == pytest.approx(1.6)
    assert reading.scores["R-CC image score"] == pytest.approx(0.9)
    derived = next(
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126011"
    )
    names = {
        next(
            c.TextValue
            for c in n.ContentSequence
            if c.ConceptNameCodeSequence[0].CodeValue == "112039"
        ): (
            n.ConceptNameCodeSequence[0].CodeValue,
            n.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue,
        )
        for n in derived.ContentSequence
    }
    assert names["exam score"] == ("PROBSUM", "{score}")
    assert names["breast R score"] == ("PROBSUM", "{score}")
    assert names["L-CC image score"] == ("111047", "%")
    assert not any("uncalibrated" in t for t in reading.texts)
    bad = make_inference(exam, bundle=demo_bundle(score_kind="probability"))
    bad.views[L_CC].ensemble = 1.5  # a view probability above 1 is an error
    with pytest.raises(OutputError, match=r"outside 0\.\.1"):
        build_outputs(exam, bad, revision=1)


def test_calibrated_probability_and_category_are_carried(
    exam: dict[Slot, pydicom.Dataset],
) -> None:
    inference = make_inference(exam)
    inference.probability, inference.category = 0.375, 7
    outputs = build_outputs(exam, inference, revision=1)
    reading = read_report(one(outputs, OutputKind.SR, None))
    assert reading.scores["exam probability"] == pytest.approx(0.375)
    assert reading.scores["exam category"] == 7
    assert reading.scores["exam score"] == pytest.approx(inference.scores.exam_score)
    inference.probability = 1.2
    with pytest.raises(OutputError, match=r"outside 0\.\.1"):
        build_outputs(exam, inference, revision=1)


def test_unknown_score_kind_is_refused(exam: dict[Slot, pydicom.Dataset]) -> None:
    inference = make_inference(exam, bundle=demo_bundle(score_kind="odds"))
    with pytest.raises(OutputError, match="score_kind should be one of"):
        build_outputs(exam, inference, revision=1)


# ---------------------------------------------------------------------------------------------
# demo labelling
# ---------------------------------------------------------------------------------------------


def _demo_texts(ds: pydicom.Dataset) -> str:
    parts = [
        str(ds.get(k, ""))
        for k in (
            "SeriesDescription",
            "ImageComments",
            "DerivationDescription",
            "ContentDescription",
        )
    ]
    if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33":
        parts += read_report(ds).texts
    elif ds.Modality == "SR":  # Mammography CAD SR: every text in the tree
        parts += [str(e.value) for e in ds.iterall() if e.keyword == "TextValue"]
    return " ".join(parts)


def _yellow(rgb: np.ndarray) -> np.ndarray:
    """Pixels close to the DEMO text colour (text is anti-aliased)."""
    r, g, b = (rgb[..., k].astype(int) for k in range(3))
    return (abs(r - DEMO_RGB[0]) < 40) & (abs(g - DEMO_RGB[1]) < 40) & (b < 60) & (g < 250)


def test_demo_bundle_says_so_in_every_output(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    for out in outputs:
        ds = out.dataset
        assert "DEMO NOT FOR CLINICAL USE" in ds.SeriesDescription
        assert "NOT FOR CLINICAL USE" in _demo_texts(ds).upper()
        if out.kind is OutputKind.SC:
            assert _yellow(ds.pixel_array).sum() > 20  # the DEMO line is drawn in yellow
    clinical = build_outputs(
        exam, make_inference(exam, bundle=demo_bundle(is_demo=False)), revision=1
    )
    for out in clinical:
        assert "DEMO" not in _demo_texts(out.dataset).upper()
        if out.kind is OutputKind.SC:
            assert _yellow(out.dataset.pixel_array).sum() == 0


# ---------------------------------------------------------------------------------------------
# Secondary Capture
# ---------------------------------------------------------------------------------------------


def _is(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == colour, axis=-1)


def test_sc_draws_box_and_coa_on_the_stored_grid(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    inference = make_inference(exam)
    for slot in SLOTS:
        ds = one(outputs, OutputKind.SC, slot)
        rgb = ds.pixel_array
        assert rgb.shape == (exam[slot].Rows, exam[slot].Columns, 3)
        x0, y0, x1, y1 = inference.views[slot].roi
        green = _is(rgb, BOX_RGB)
        assert green[y0, x0:x1].all() and green[y1 - 1, x0:x1].all()
        assert green[y0:y1, x0].all() and green[y0:y1, x1 - 1].all()
        assert not green[y0 - 1, x0:x1].any() and not green[y0:y1, x1].any()
        assert green.sum() == green[y0:y1, x0:x1].sum()  # nothing green outside the box
        cx, cy = inference.views[slot].coa
        assert _is(rgb, COA_RGB)[int(cy), int(cx)]


def test_sc_heat_map_sits_on_the_saliency(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    inference = make_inference(exam)
    ds = one(outputs, OutputKind.SC, R_CC)
    rgb = ds.pixel_array.astype(int)
    cx, cy = (int(v) for v in inference.views[R_CC].coa)
    near = rgb[cy + 4, cx + 4]  # inside the blob, off the COA cross
    far = rgb[exam[R_CC].Rows // 2, exam[R_CC].Columns - 30]  # breast tissue, no saliency
    assert near[0] - near[2] > 60  # red-yellow heat
    assert abs(far[0] - far[2]) < 3  # plain grey


def test_sc_attributes(outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]) -> None:
    for slot in SLOTS:
        ds = one(outputs, OutputKind.SC, slot)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.SamplesPerPixel) == ("RGB", 8, 3)
        assert (ds.BurnedInAnnotation, ds.ConversionType) == ("YES", "WSD")
        assert ds.PatientOrientation == exam[slot].PatientOrientation  # e.g. A\FR, P\FL
        assert [float(v) for v in ds.PixelSpacing] == [0.1, 0.1]
        assert ds.ImageLaterality == slot.laterality.value
        (source,) = ds.SourceImageSequence
        assert source.ReferencedSOPInstanceUID == exam[slot].SOPInstanceUID
        assert source.ReferencedSOPClassUID == exam[slot].SOPClassUID


def test_monochrome1_source_is_inverted_for_display() -> None:
    exam = make_exam(ExamSpec(photometric="MONOCHROME1"))
    outputs = build_outputs(exam, make_inference(exam), revision=1)
    rgb = one(outputs, OutputKind.SC, L_CC).pixel_array.astype(int)
    rows, cols = rgb.shape[:2]
    tissue = rgb[rows // 2 + rows // 4, 5:15].mean()  # breast near the chest wall (left)
    air = rgb[5:15, cols - 15 : cols - 5].mean()  # top right: outside the breast
    assert tissue > air + 100


def test_large_image_sc_is_reduced_by_an_integer_factor() -> None:
    exam = make_exam(ExamSpec(rows=240, columns=200))
    inference = make_inference(exam)
    outputs = build_outputs(exam, inference, revision=1, sc_max_pixels=120 * 100)
    for slot in SLOTS:
        ds = one(outputs, OutputKind.SC, slot)
        assert (ds.Rows, ds.Columns) == (120, 100)
        assert [float(v) for v in ds.PixelSpacing] == [0.2, 0.2]
        x0, y0, x1, y1 = box_in_sc(inference.views[slot].roi, 2)
        green = _is(ds.pixel_array, BOX_RGB)
        assert green[y0, x0:x1].all() and green[y0:y1, x1 - 1].all()
        assert green.sum() == green[y0:y1, x0:x1].sum()
    assert "reduced 2x" in one(outputs, OutputKind.SC, L_CC).DerivationDescription


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def test_seg_marks_the_top_percent_of_saliency_where_the_model_looked(
    written: list[Path], exam: dict[Slot, pydicom.Dataset]
) -> None:
    inference = make_inference(exam)
    for slot in SLOTS:
        (path,) = [p for p in written if p.name == f"seg_{slot}.dcm"]
        seg = hd.seg.segread(path)
        view = inference.views[slot]
        pixels = seg.get_pixels_by_source_instance(
            [exam[slot].SOPInstanceUID], segment_numbers=[1], ignore_spatial_locations=True
        )
        mask = pixels[0, :, :, 0].astype(bool)
        assert mask.shape == view.saliency.stored_shape
        assert np.array_equal(mask, top_mask(view.saliency, 0.01))
        assert abs(int(mask.sum()) - round(0.01 * mask.size)) <= 0.002 * mask.size
        cx, cy = view.coa
        assert mask[int(cy), int(cx)]  # the COA lies in the segment, in the stored grid
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = view.roi
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        assert [u[2] for u in seg.get_source_image_uids()] == [exam[slot].SOPInstanceUID]


def test_seg_attributes_for_viewers(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    for slot in SLOTS:
        ds = one(outputs, OutputKind.SEG, slot)
        shared = ds.SharedFunctionalGroupsSequence[0]
        measures = shared.PixelMeasuresSequence[0]
        assert [float(v) for v in measures.PixelSpacing] == [0.1, 0.1]
        assert float(measures.SliceThickness) == 52.0  # Body Part Thickness of the source
        assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [
            1,
            0,
            0,
            0,
            1,
            0,
        ]
        assert ds.PatientOrientation == exam[slot].PatientOrientation
        assert (ds.SegmentationType, ds.ContentQualification) == ("BINARY", "RESEARCH")
        segment = ds.SegmentSequence[0]
        algo = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("mammo-demo", "0.1.0")
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "130404"


def test_seg_and_sc_of_a_source_without_frame_of_reference(tmp_path: Path) -> None:
    exam = make_exam(ExamSpec(frame_of_reference=False, charset="ISO_IR 192"))
    outputs = build_outputs(exam, make_inference(exam), revision=1)
    for out in outputs:
        read = roundtrip(out.dataset, tmp_path)
        assert "FrameOfReferenceUID" not in read
        assert str(read.PatientName) == "Müller^Anna" and read.SpecificCharacterSet == "ISO_IR 192"


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def test_mismatched_inputs_are_refused_with_a_clear_message(
    exam: dict[Slot, pydicom.Dataset],
) -> None:
    inference = make_inference(exam)
    inference.views[R_CC].sop_instance_uid = "1.2.3"
    with pytest.raises(
        OutputError, match=r"view R-CC: source SOPInstanceUID .* is not the scored image '1\.2\.3'"
    ):
        build_outputs(exam, inference, revision=1)

    inference = make_inference(exam)
    inference.views[L_MLO].saliency = SaliencyMap(np.zeros((10, 10), np.float32), (10, 10))
    with pytest.raises(OutputError, match=r"\"saliency\" should be a SaliencyMap over the 208x256"):
        build_outputs(exam, inference, revision=1)

    inference = make_inference(exam)
    inference.views[L_CC].roi = (100, 10, 300, 20)
    with pytest.raises(OutputError, match=r"\"roi\" \(100, 10, 300, 20\) is not a non-empty box"):
        build_outputs(exam, inference, revision=1)

    inference = make_inference(exam)
    with pytest.raises(OutputError, match="no source image was given"):
        build_outputs({s: d for s, d in exam.items() if s != R_MLO}, inference, revision=1)


# ---------------------------------------------------------------------------------------------
# synthetic exams from mammo_node.synth (real-looking anatomy, lesions with known positions)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("monochrome1", [False, True])
def test_synth_exam_outputs_point_at_its_lesions(monochrome1: bool, tmp_path: Path) -> None:
    exam, inference, lesions = synth_exam(seed=3, monochrome1=monochrome1)
    assert set(lesions) == {R_CC, R_MLO}  # seed 3: a right-breast screening cancer
    outputs = build_outputs(exam, inference, revision=1)
    for out in outputs:
        path = tmp_path / f"{out.kind}_{out.slot}.dcm"
        out.dataset.save_as(path, enforce_file_format=True)
        if shutil.which("dciodvfy"):
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert "Error" not in run.stderr + run.stdout, f"{path.name}: {run.stderr}"
    for slot, (lx, ly) in lesions.items():
        view = inference.views[slot]
        reading = read_report(one(outputs, OutputKind.SR_VIEW, slot))
        assert reading.centres[view.sop_instance_uid] == pytest.approx((lx, ly))
        x0, y0, x1, y1 = reading.boxes[view.sop_instance_uid]
        assert x0 <= lx <= x1 and y0 <= ly <= y1  # the box is on the lesion
        seg = one(outputs, OutputKind.SEG, slot)
        assert top_mask(view.saliency, 0.01)[int(ly), int(lx)]
        assert seg.Rows == exam[slot].Rows and seg.Columns == exam[slot].Columns
    for slot in SLOTS:
        rgb = one(outputs, OutputKind.SC, slot).pixel_array.astype(int)
        green = _is(rgb, BOX_RGB)
        x0, y0, x1, y1 = inference.views[slot].roi
        assert green[y0, x0:x1].all() and green.sum() == green[y0:y1, x0:x1].sum()
        rows, cols = rgb.shape[:2]
        wall = slice(0, 12) if slot.laterality is Laterality.L else slice(cols - 12, cols)
        air = slice(cols - 12, cols) if slot.laterality is Laterality.L else slice(0, 12)
        # shown as a viewer shows it (MONOCHROME1 inverted): tissue brighter than the air
        assert rgb[rows // 2, wall].mean() > rgb[2:12, air].mean() + 40


def test_salient_mask_is_the_exact_top_fraction() -> None:
    rng = np.random.default_rng(5)
    maps = [
        rng.random((300, 200), dtype=np.float32),
        np.round(rng.random((300, 200)), 1).astype(np.float32),  # heavy ties at the cut
        np.zeros((50, 40), np.float32),  # nothing salient: empty mask
        np.pad(np.ones((3, 3), np.float32), ((0, 297), (0, 197))),  # fewer non-zeros than k
    ]
    biased = rng.random(900 * 700, dtype=np.float32) / 2
    biased[::3] += 0.5  # the strided sample sees only the high third: the fallback path
    maps.append(biased.reshape(900, 700))
    for saliency in maps:
        k = int(np.ceil(0.01 * saliency.size))
        cut = np.sort(saliency.ravel())[::-1][k - 1]
        expected = (saliency >= cut) & (saliency > 0)
        assert np.array_equal(salient_mask(saliency, 0.01), expected)


def test_the_seg_mask_is_the_maps_top_fraction_drawn_on_the_stored_grid() -> None:
    rng = np.random.default_rng(8)
    for (h, w), (rows, cols) in [
        ((37, 29), (128, 100)),
        ((64, 52), (64, 52)),
        ((30, 20), (101, 67)),
    ]:
        values = rng.random((h, w), dtype=np.float32) ** 4
        smap = SaliencyMap(values, stored_shape=(rows, cols))
        mask = top_mask(smap, 0.05)
        # reference: every stored pixel centre looked up in the map pixel it lies in
        iy = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(int), h - 1)
        ix = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(int), w - 1)
        expected = salient_mask(values, 0.05)[np.ix_(iy, ix)]
        assert mask.shape == (rows, cols) and np.array_equal(mask, expected)
        assert abs(mask.mean() - 0.05) < 0.02  # the share of the image is kept
    assert not top_mask(SaliencyMap(np.zeros((8, 8), np.float32), (40, 40)), 0.01).any()


def test_the_heat_map_is_the_map_sampled_at_each_sc_pixels_centre() -> None:
    rows, cols = 90, 70
    smap = gaussian_saliency(rows, cols, 30.0, 50.0, sigma=12.0, per_map_pixel=3.5)
    full = on_blocks(smap, 1)
    assert full.shape == (rows, cols) and full.max() <= 1.0 and full.min() >= 0.0
    assert np.unravel_index(full.argmax(), full.shape) == pytest.approx((50, 30), abs=2)
    for factor in (2, 3):  # a ragged edge at 3: ceil sizes
        reduced = on_blocks(smap, factor)
        assert reduced.shape == (-(-rows // factor), -(-cols // factor))
        # the block mean of the full-size map, within the smooth map's curvature
        assert np.abs(reduced - block_mean(full, factor)).max() < 0.01
    stored_grid = SaliencyMap(full, stored_shape=(rows, cols))  # a map already on the grid
    assert np.array_equal(on_blocks(stored_grid, 1), full)
    assert np.allclose(on_blocks(stored_grid, 2), block_mean(full, 2), atol=1e-6)
    broken = SaliencyMap(np.array([[np.nan, np.inf], [-np.inf, 0.5]], np.float32), (4, 4))
    assert np.isfinite(on_blocks(broken, 1)).all()


def test_the_sc_is_blended_in_bands_with_the_values_of_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The heat map is sampled and blended in bands of SC rows (``BlockSampler.rows``): the
    same pixels as sampling the whole map (``on_blocks``) and looking every pixel up at once in
    the blend table, for one band or many (a last band shorter), at factors 1 and 3 (ragged)."""
    from mammo_node.writers import sc

    rows, cols = 91, 70
    smap = gaussian_saliency(rows, cols, 30.0, 50.0, sigma=12.0, per_map_pixel=3.5)
    rng = np.random.default_rng(3)
    for factor in (1, 3):
        sampler = BlockSampler(smap, factor)
        whole = on_blocks(smap, factor)
        grey = rng.random(whole.shape, dtype=np.float32)
        level = np.rint(whole * np.float32(255)).astype(np.uint16) << 8
        expected = sc.blend_table()[level | np.rint(grey * np.float32(255)).astype(np.uint16)]
        for band_pixels in (sc._BAND_PIXELS, whole.shape[1] * 4):  # whole image; 4 rows a band
            monkeypatch.setattr(sc, "_BAND_PIXELS", band_pixels)
            assert np.array_equal(sampler.rows(5, 9), whole[5:9])
            blended = sc._blend_heat(grey, sampler)
            assert blended.dtype == np.uint8 and np.array_equal(blended, expected)
        with pytest.raises(OutputError, match="does not match"):
            sc._blend_heat(grey[1:], sampler)


def test_sc_size_rule_for_detector_formats() -> None:
    assert scale_factor(4096, 3328, DEFAULT_MAX_PIXELS) == 2  # 13.6 MP -> 1664 x 2048
    assert scale_factor(2294, 1914, DEFAULT_MAX_PIXELS) == 1  # 4.4 MP kept
    assert scale_factor(256, 208, 256 * 208) == 1 and scale_factor(256, 208, 256 * 208 - 1) == 2


def test_an_exam_with_one_breast_scored(exam: dict[Slot, pydicom.Dataset]) -> None:
    left = {s: ds for s, ds in exam.items() if s.laterality is Laterality.L}
    inference = make_inference(left)
    outputs = build_outputs(left, inference, revision=1)
    assert [(o.kind, o.slot) for o in outputs if o.kind is not OutputKind.SR][:2] == [
        (OutputKind.SR_VIEW, L_CC),
        (OutputKind.SR_VIEW, L_MLO),
    ]
    reading = read_report(one(outputs, OutputKind.SR, None))
    assert set(reading.scores) == {
        "L-CC image score",
        "L-MLO image score",
        "breast L score",
        "exam score",
    }
    assert reading.boxes.keys() == {exam[L_MLO].SOPInstanceUID}  # the higher left view


def test_undecodable_source_pixels_raise_output_error(exam: dict[Slot, pydicom.Dataset]) -> None:
    broken = dict(exam)
    broken[R_MLO] = copy.deepcopy(exam[R_MLO])  # Dataset.copy() shares the elements
    broken[R_MLO].PixelData = exam[R_MLO].PixelData[:100]
    with pytest.raises(OutputError, match="pixel data cannot be decoded"):
        build_outputs(broken, make_inference(exam), revision=1)


def test_sources_missing_type2_attributes_still_give_valid_outputs(tmp_path: Path) -> None:
    """Real files omit Type 2 attributes (AccessionNumber, StudyID...): outputs stay valid."""
    from mammo_node.domain import BundleInfo, ExamInference, ExamScores, ViewInference
    from tests.helpers.mg import four_view_exam

    exam = four_view_exam(rows=64, columns=48)  # no AccessionNumber, StudyID, StudyTime...
    assert "AccessionNumber" not in exam[0] and "StudyID" not in exam[0]
    sources = {Slot.parse(f"{d.ImageLaterality}-{d.ViewPosition}"): d for d in exam}
    values = np.zeros((64, 48), np.float32)
    values[20:30, 10:20] = 1.0
    saliency = SaliencyMap(values, stored_shape=(64, 48))
    views = {
        slot: ViewInference(
            str(d.SOPInstanceUID), slot, 0.1, 0.2, 0.15, (15.0, 25.0), (5, 15, 25, 35), saliency
        )
        for slot, d in sources.items()
    }
    inference = ExamInference(
        str(exam[0].StudyInstanceUID),
        views,
        ExamScores({Laterality.L: 0.3, Laterality.R: 0.3}, 0.3),
        BundleInfo("t", "1", "resnet18", True, "logit_difference", "1.2.3"),
    )
    outputs = build_outputs(sources, inference, revision=0)
    assert len(outputs) == 15
    assert "AccessionNumber" not in exam[0], "the sources are not modified"
    for out in outputs:
        path = tmp_path / f"{out.sop_instance_uid}.dcm"
        out.dataset.save_as(path, enforce_file_format=True)
        assert pydicom.dcmread(path).AccessionNumber == ""


def test_every_output_copies_patient_study_and_request(
    outputs: list[OutputObject], exam: dict[Slot, pydicom.Dataset]
) -> None:
    """An issuer-matching PACS files every output (SC included) under the source's patient."""
    source = exam[L_CC]
    for out in outputs:
        ds = out.dataset
        for keyword in (
            "PatientID",
            "IssuerOfPatientID",
            "PatientAge",
            "StudyDescription",
            "AccessionNumber",
            "ProcedureCodeSequence",
            "OtherPatientIDsSequence",
        ):
            assert ds.get(keyword) == source.get(keyword), f"{out.kind} {out.slot}: {keyword}"
        if ds.Modality == "SR":
            (request,) = ds.ReferencedRequestSequence
            assert (request.AccessionNumber, request.RequestedProcedureID) == ("ACC42", "RP42")
            code = request.RequestedProcedureCodeSequence[0]
            assert code.CodeValue == "24623002"
        else:
            assert ds.RequestAttributesSequence == source.RequestAttributesSequence


def test_a_rescore_withdraws_the_earlier_images_with_an_iocm_rejection_note(
    exam: dict[Slot, pydicom.Dataset], outputs: list[OutputObject], tmp_path: Path
) -> None:
    old = [
        ReferencedDocument(
            o.dataset.StudyInstanceUID, o.series_instance_uid, o.sop_instance_uid, o.sop_class_uid
        )
        for o in outputs
        if o.kind in (OutputKind.SC, OutputKind.SEG, OutputKind.GSPS)
    ]
    again = build_outputs(exam, make_inference(exam), revision=2, withdrawn=old, now=NOW)
    (kos,) = [o for o in again if o.kind is OutputKind.KOS]
    ds = kos.dataset
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59" and ds.Modality == "KO"
    title = ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113001", "DCM")
    listed = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for i in ds.ContentSequence
        if "ReferencedSOPSequence" in i
    }
    assert listed == {d.sop_instance_uid for d in old}  # 4 SC + 4 SEG + 1 GSPS
    assert len(listed) == 9
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("WRT-0001", "HOSP-A")
    path = tmp_path / "kos.dcm"
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", check=False
    )
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
    # the rejection note goes where the withdrawn objects went
    from mammo_node.writers.identity import output_kinds_for

    assert "kos" in output_kinds_for("sc") and "kos" not in output_kinds_for("tid1500,cad-sr")


def test_highdicoms_iod_lookups_are_memoised_with_the_same_answers() -> None:
    import highdicom._standard_utils as standard_utils

    from mammo_node.writers import iod_lookups

    assert iod_lookups.installed()  # importing mammo_node.writers put it in place
    mg = "1.2.840.10008.5.1.4.1.1.1.2"
    questions = [
        ("ContentDate", "1.2.840.10008.5.1.4.1.1.7", None),  # Secondary Capture
        ("ContentTime", "1.2.840.10008.5.1.4.1.1.66.4", None),  # Segmentation
        ("NumberOfFrames", mg, None),
        ("PixelData", mg, ("IconImageSequence",)),
        ("PixelData", "1.2.840.10008.5.1.4.1.1.88.33", ("IconImageSequence",)),  # an SR
    ]
    for attribute, sop_class, exclude in questions:
        for _ in range(2):  # the cached answer is the first answer
            assert iod_lookups.is_attribute_in_iod(attribute, sop_class, exclude) is (
                iod_lookups.ORIGINAL(attribute, sop_class, exclude_path_elements=exclude)
            )
    assert standard_utils.does_iod_have_pixel_data(mg)
    assert not standard_utils.does_iod_have_pixel_data("1.2.840.10008.5.1.4.1.1.88.33")
    with pytest.raises(KeyError, match="No IOD found"):
        iod_lookups.is_attribute_in_iod("PixelData", "1.2.3.4")
