"""Synthetic screening exams: determinism, DICOM tags, geometry, lesions, labels."""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from mammo_node.domain import SLOTS, Laterality, Slot, View
from mammo_node.synth import (
    FULL_SIZE_LARGE,
    LABEL_COLUMNS,
    MG_FOR_PRESENTATION,
    TRUTH_COLUMNS,
    SynthError,
    SynthExam,
    SynthOptions,
    generate_exam,
    generate_exams,
    patient_anatomy,
    plan_exams,
    write_synthetic_dataset,
)
from mammo_node.synth.wrap import chest_wall_side
from tests.helpers.tools import dciodvfy_errors

SMALL = {"rows": 256, "columns": 208}


def display(ds: pydicom.Dataset) -> np.ndarray:
    """Pixels as a viewer shows them: 0 = black, 1 = white, window applied."""
    pixels = ds.pixel_array.astype(np.float64)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    shown = np.clip((pixels - (centre - width / 2)) / width, 0.0, 1.0)
    return 1.0 - shown if ds.PhotometricInterpretation == "MONOCHROME1" else shown


@pytest.fixture(scope="module")
def exams() -> list[SynthExam]:
    options = SynthOptions(
        **SMALL,
        exams=16,
        seed=7,
        screening_fraction=0.5,
        interval_fraction=0.25,
        monochrome1_fraction=0.25,
    )
    return list(generate_exams(options))


def test_same_seed_same_exams_other_seed_other_exams() -> None:
    options = SynthOptions(**SMALL, exams=3, seed=3)
    first, second = list(generate_exams(options)), list(generate_exams(options))
    other = list(generate_exams(SynthOptions(**SMALL, exams=3, seed=4)))
    for a, b in zip(first, second, strict=True):
        assert a.study_uid == b.study_uid and a.truth == b.truth
        assert a.reader_scores == b.reader_scores
        for slot in SLOTS:
            assert a.datasets[slot].SOPInstanceUID == b.datasets[slot].SOPInstanceUID
            assert a.datasets[slot].PixelData == b.datasets[slot].PixelData
    assert {e.study_uid for e in first}.isdisjoint(e.study_uid for e in other)
    assert first[0].datasets[SLOTS[0]].PixelData != other[0].datasets[SLOTS[0]].PixelData


def test_four_views_with_the_tags_of_an_ffdm_for_presentation_image(exams) -> None:
    exam = exams[0]
    assert list(exam.datasets) == list(SLOTS)
    sets = list(exam.datasets.values())
    assert len({ds.StudyInstanceUID for ds in sets}) == 1
    assert len({ds.SeriesInstanceUID for ds in sets}) == 4
    assert len({ds.SOPInstanceUID for ds in sets}) == 4
    expected_orientation = {
        "L-CC": ["A", "R"],
        "L-MLO": ["A", "FR"],
        "R-CC": ["P", "L"],
        "R-MLO": ["P", "FL"],
    }
    view_codes = {View.CC: "399162004", View.MLO: "399368009"}
    for slot, ds in exam.datasets.items():
        assert ds.SOPClassUID == MG_FOR_PRESENTATION == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert UID(uid).is_valid and len(uid) <= 64
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert list(ds.ImageType)[:2] == ["ORIGINAL", "PRIMARY"]
        assert ds.ImageLaterality == slot.laterality.value and "Laterality" not in ds
        assert ds.ViewPosition == slot.view.value
        assert ds.ViewCodeSequence[0].CodeValue == view_codes[slot.view]
        assert ds.ViewCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert list(ds.PatientOrientation) == expected_orientation[str(slot)]
        assert ds.PatientID == exam.patient_id and ds.PatientSex == "F"
        assert ds.Manufacturer == "mammo-node synth" and ds.BodyPartExamined == "BREAST"
        assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 13, 14)
        assert ds.HighBit == ds.BitsStored - 1 and ds.PixelRepresentation == 0
        assert (ds.Rows, ds.Columns) == (256, 208)
        assert int(ds.pixel_array.max()) < 2**ds.BitsStored
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(232.96 / 208, rel=1e-4)
        for keyword in (
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "PatientBirthDate",
            "KVP",
            "Exposure",
            "CompressionForce",
            "BodyPartThickness",
            "DistanceSourceToDetector",
            "EstimatedRadiographicMagnificationFactor",
            "PositionerPrimaryAngle",
            "DetectorType",
            "WindowCenter",
            "WindowWidth",
            "RescaleIntercept",
            "RescaleSlope",
            "BreastImplantPresent",
        ):
            assert ds.get(keyword) not in (None, ""), keyword
    assert len({ds.BitsStored for e in exams for ds in e.datasets.values()}) > 1


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    options = SynthOptions(**SMALL)
    args = {
        "options": options,
        "patient_id": "SYN-X",
        "outcome": "screening",
        "cancer_laterality": "L",
        "study_date": dt.date(2020, 5, 1),
        "bits_stored": 12,
    }
    mono2 = generate_exam(np.random.default_rng(5), photometric="MONOCHROME2", **args)
    mono1 = generate_exam(np.random.default_rng(5), photometric="MONOCHROME1", **args)
    for slot in SLOTS:
        ds1, ds2 = mono1.datasets[slot], mono2.datasets[slot]
        assert ds1.PhotometricInterpretation == "MONOCHROME1"
        assert ds1.PresentationLUTShape == "INVERSE" and ds2.PresentationLUTShape == "IDENTITY"
        assert np.array_equal(ds1.pixel_array.astype(int), 4095 - ds2.pixel_array.astype(int))
        assert float(ds1.WindowCenter) == pytest.approx(4095 - float(ds2.WindowCenter), abs=0.1)
        # air (top corner on the nipple side) is dark on screen either way
        air = (slice(0, 8), slice(0, 8) if slot.laterality is Laterality.R else slice(-8, None))
        assert display(ds1)[air].max() < 0.05 and display(ds2)[air].max() < 0.05


def test_right_breasts_are_mirrored_with_the_chest_wall_on_the_other_side(exams) -> None:
    for exam in exams:
        for slot, ds in exam.datasets.items():
            shown = display(ds)
            tissue = shown > 0.1
            centroid = np.nonzero(tissue)[1].mean() / ds.Columns
            side = chest_wall_side(ds.pixel_array, ds.PhotometricInterpretation)
            if slot.laterality is Laterality.L:
                assert centroid < 0.4 and side == "left"
            else:
                assert centroid > 0.6 and side == "right"


def test_mlo_has_a_pectoral_muscle_at_the_top_of_the_chest_wall(exams) -> None:
    for exam in exams[:4]:
        mlo, cc = display(exam.datasets[SLOTS[1]]), display(exam.datasets[SLOTS[0]])
        corner = (slice(0, 256 // 12), slice(0, 208 // 20))  # top of the chest-wall side
        assert mlo[corner].mean() > cc[corner].mean() + 0.05
        assert mlo[corner].mean() > 0.5


def lesion_contrast(ds: pydicom.Dataset, x: float, y: float, r: float) -> tuple[float, float]:
    """Mean display value inside r/2 and in the ring r*1.6..2.4 around (x, y)."""
    shown = display(ds)
    yy, xx = np.mgrid[: ds.Rows, : ds.Columns]
    dist = np.hypot(xx - x, yy - y)
    return shown[dist <= max(r / 2, 1.5)].mean(), shown[(dist > 1.6 * r) & (dist < 2.4 * r)].mean()


def test_lesions_are_inside_the_breast_brighter_locally_and_in_both_views(exams) -> None:
    screening = [e for e in exams if e.outcome == "screening"]
    assert len(screening) == 8
    for exam in screening:
        affected = [t for t in exam.truth if t.malignant]
        assert {t.slot for t in affected} == {
            f"{exam.cancer_laterality}-CC",
            f"{exam.cancer_laterality}-MLO",
        }
        for t in affected:
            ds = exam.datasets[Slot.parse(t.slot)]
            assert t.sop_instance_uid == ds.SOPInstanceUID and t.study_uid == exam.study_uid
            assert 0 <= t.x < ds.Columns and 0 <= t.y < ds.Rows
            centre, ring = lesion_contrast(ds, t.x, t.y, t.radius)
            assert ring > 0.05, "ring around the lesion should be breast tissue, not air"
            assert centre > ring + 0.15, (t, centre, ring)
        # same distance from the nipple in CC and MLO (canonical frame: chest wall at x = 0)
        anatomy = patient_anatomy(7, exam.patient_id)[Laterality(exam.cancer_laterality)]
        depth = {"CC": anatomy.depth_cc * 208, "MLO": anatomy.depth_mlo * 208}
        from_nipple = []
        for t in affected:
            x = t.x if exam.cancer_laterality == "L" else 208 - 1 - t.x
            from_nipple.append(depth[t.slot[2:]] - x)
        assert from_nipple[0] == pytest.approx(from_nipple[1], abs=0.01)


def test_interval_cancers_are_subtle_and_normals_have_no_malignant_truth(exams) -> None:
    seen: dict[str, list[float]] = {"subtle_mass": [], "visible": []}
    for exam in exams:
        if exam.outcome == "normal":
            assert exam.cancer_laterality == ""
            assert not any(t.malignant for t in exam.truth)
        for t in (t for t in exam.truth if t.malignant):
            assert (t.kind == "subtle_mass") == (exam.outcome == "interval")
            ds = exam.datasets[Slot.parse(t.slot)]
            centre, ring = lesion_contrast(ds, t.x, t.y, t.radius)
            seen["subtle_mass" if t.kind == "subtle_mass" else "visible"].append(centre - ring)
    assert seen["subtle_mass"] and seen["visible"]
    assert np.mean(seen["subtle_mass"]) < 0.4 * np.mean(seen["visible"])


def test_reader_scores_follow_the_outcome(exams) -> None:
    cancer, normal = [], []
    for exam in exams:
        for side in "LR":
            scores = [exam.reader_scores[f"reader{r}_{side}"] for r in (1, 2)]
            assert all(1 <= s <= 5 for s in scores)
            if exam.outcome == "screening" and exam.cancer_laterality == side:
                cancer += scores
            elif exam.outcome == "normal":
                normal += scores
    assert np.mean(cancer) > np.mean(normal) + 1.5


def test_plan_counts_outcomes_and_gives_some_women_two_exams() -> None:
    options = SynthOptions(**SMALL, exams=40, seed=11, repeat_patient_fraction=0.3)
    plans = plan_exams(options)
    counts = Counter(p.outcome for p in plans)
    assert counts == {"screening": 12, "interval": 4, "normal": 24}
    assert sum(p.photometric == "MONOCHROME1" for p in plans) == 8
    by_patient: dict[str, list] = {}
    for p in plans:
        by_patient.setdefault(p.patient_id, []).append(p)
    pairs = [v for v in by_patient.values() if len(v) == 2]
    assert len(pairs) == 6 and len(by_patient) == 34
    for pair in pairs:
        earlier, later = sorted(pair, key=lambda p: p.study_date)
        assert earlier.outcome == "normal"
        assert (later.study_date - earlier.study_date).days >= 700


def test_write_dataset_files_labels_and_truth(tmp_path: Path) -> None:
    options = SynthOptions(
        **SMALL,
        exams=6,
        seed=2,
        screening_fraction=0.5,
        monochrome1_fraction=0.5,
        repeat_patient_fraction=0.4,
    )
    summary = write_synthetic_dataset(tmp_path, options)
    assert summary.exams == 6 and summary.images == 24 and summary.patients == 5
    assert sum(summary.outcomes.values()) == 6
    with summary.labels_csv.open() as f:
        labels = list(csv.DictReader(f))
    assert tuple(labels[0]) == LABEL_COLUMNS
    assert {row["outcome"] for row in labels} <= {"screening", "interval", "normal"}
    with summary.truth_csv.open() as f:
        truth = list(csv.DictReader(f))
    assert truth and tuple(truth[0]) == TRUTH_COLUMNS
    written = {pydicom.dcmread(p).SOPInstanceUID: p for p in summary.files}
    for row in truth:
        path = written[row["sop_instance_uid"]]
        assert path.parent.name == row["study_uid"] and path.stem == row["slot"]
    mono = {}
    for path in summary.files:
        ds = pydicom.dcmread(path)
        mono.setdefault(ds.PhotometricInterpretation, path)
    assert set(mono) == {"MONOCHROME1", "MONOCHROME2"}
    for path in mono.values():
        assert dciodvfy_errors(path) == []


def test_invalid_options_name_the_argument() -> None:
    with pytest.raises(SynthError, match='"rows"'):
        SynthOptions(rows=10)
    with pytest.raises(ValueError, match='"screening_fraction"'):
        SynthOptions(screening_fraction=0.8, interval_fraction=0.3)
    with pytest.raises(SynthError, match='"lesion_radius_mm"'):
        SynthOptions(lesion_radius_mm=(5.0, 2.0))
    with pytest.raises(SynthError, match='"cancer_laterality"'):
        generate_exam(
            np.random.default_rng(0),
            options=SynthOptions(**SMALL),
            patient_id="P",
            outcome="screening",
            cancer_laterality="",
            study_date=dt.date(2020, 1, 1),
        )


def test_small_exam_generates_fast() -> None:
    options = SynthOptions(**SMALL, exams=3, seed=99)
    started = time.perf_counter()
    list(generate_exams(options))
    assert (time.perf_counter() - started) / 3 < 1.0


@pytest.mark.slow
def test_full_size_exam_generation_time() -> None:
    rows, columns = FULL_SIZE_LARGE
    options = SynthOptions(
        rows=rows, columns=columns, exams=1, screening_fraction=1.0, interval_fraction=0.0
    )
    started = time.perf_counter()
    exam = next(generate_exams(options))
    per_image = (time.perf_counter() - started) / 4
    ds = exam.datasets[SLOTS[0]]
    assert (ds.Rows, ds.Columns) == FULL_SIZE_LARGE
    assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(0.07, abs=1e-4)
    assert len(exam.truth) == 2 and exam.truth[0].radius > 6.0 / 0.07 * 0.9
    print(f"full-size {rows}x{columns}: {per_image:.2f} s per image")
    assert per_image < 10.0
