"""Indexing: slots from tags, labels, the paper's label rule, exclusions with reasons."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mammo_node.domain import SLOTS, Slot
from mammo_node.ml.preprocess import OrientationRule, PreprocessSettings
from tests.helpers.mg import breast_phantom, mg_dataset
from trainer.cache import ImageCache
from trainer.data import ExamRecord, Manifest, image_label, index_dataset, read_labels
from trainer.distributed import DistInfo
from trainer.errors import DataError
from trainer.progress import Reporter


def write_exam(root: Path, study: str, patient: str, slots: list[str]) -> None:
    (root / study).mkdir(parents=True, exist_ok=True)
    for n, text in enumerate(slots):
        slot = Slot.parse(text)
        ds = mg_dataset(
            display=breast_phantom(40, 32, seed=n),
            laterality=slot.laterality.value,
            view=slot.view.value,
            study_uid=study,
            patient_id=patient,
        )
        ds.save_as(root / study / f"{n}-{text}.dcm", enforce_file_format=True)


def write_labels(path: Path, rows: list[dict[str, str]]) -> None:
    columns = [
        "patient_id",
        "study_uid",
        "outcome",
        "cancer_laterality",
        "reader1_L",
        "reader1_R",
        "reader2_L",
        "reader2_R",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


ALL = [str(s) for s in SLOTS]


def test_index_keeps_complete_exams_and_says_why_others_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_exam(data, "1.1", "P1", ALL)
    write_exam(data, "1.2", "P2", ALL[:3])  # R-MLO missing
    write_exam(data, "1.3", "P3", [*ALL, "L-CC"])  # two L-CC candidates
    write_exam(data, "1.4", "P4", ALL)  # no label row
    write_exam(data, "1.5", "P5", ALL)  # screening cancer without a side
    (data / "notes.txt").write_text("not DICOM")
    labels = tmp_path / "labels.csv"
    write_labels(
        labels,
        [
            {
                "patient_id": "P1",
                "study_uid": "1.1",
                "outcome": "screening",
                "cancer_laterality": "R",
                "reader1_L": "1",
                "reader1_R": "4",
                "reader2_L": "2",
                "reader2_R": "5",
            },
            {"patient_id": "P2", "study_uid": "1.2", "outcome": "normal", "cancer_laterality": ""},
            {"patient_id": "P3", "study_uid": "1.3", "outcome": "normal", "cancer_laterality": ""},
            {
                "patient_id": "P5",
                "study_uid": "1.5",
                "outcome": "screening",
                "cancer_laterality": "",
            },
            {"patient_id": "P6", "study_uid": "1.6", "outcome": "normal", "cancer_laterality": ""},
        ],
    )
    manifest = index_dataset(data, labels_csv=labels)
    assert [e.study_uid for e in manifest.exams] == ["1.1"]
    exam = manifest.exams[0]
    assert set(exam.images) == set(SLOTS)
    assert exam.images[Slot.parse("R-MLO")].laterality_source == "ImageLaterality"
    assert exam.readers == {"reader1_L": 1.0, "reader1_R": 4.0, "reader2_L": 2.0, "reader2_R": 5.0}
    reasons = {x["study_uid"]: x["reason"] for x in manifest.excluded}
    assert reasons == {
        "1.2": "not_one_image_per_slot",
        "1.3": "not_one_image_per_slot",
        "1.4": "no_label",
        "1.5": "screening_without_laterality",
        "1.6": "no_images",
    }
    assert "duplicate_slot" in next(
        x["detail"] for x in manifest.excluded if x["study_uid"] == "1.3"
    )
    assert manifest.counts["excluded_by_reason"]["not_one_image_per_slot"] == 2
    assert manifest.has_readers == {"one": True, "two": True}
    # JSON round trip
    manifest.save(tmp_path / "m.json")
    again = Manifest.load(tmp_path / "m.json")
    assert again.exams[0].images == exam.images and again.counts == manifest.counts


def test_label_rule_marks_only_the_affected_breast_of_screening_cancers() -> None:
    def exam(outcome: str, side: str) -> ExamRecord:
        return ExamRecord("s", "p", outcome, side, {})

    labels = {
        (o, side): [image_label(exam(o, side), s) for s in SLOTS]
        for o, side in [
            ("screening", "L"),
            ("screening", "R"),
            ("screening", "B"),
            ("interval", "L"),
            ("normal", ""),
        ]
    }
    # SLOTS order: L-CC, L-MLO, R-CC, R-MLO
    assert labels[("screening", "L")] == [1, 1, 0, 0]
    assert labels[("screening", "R")] == [0, 0, 1, 1]
    assert labels[("screening", "B")] == [1, 1, 1, 1]
    assert labels[("interval", "L")] == [0, 0, 0, 0]
    assert labels[("normal", "")] == [0, 0, 0, 0]


def test_png_data_with_a_view_csv(tmp_path: Path) -> None:
    data = tmp_path / "png"
    data.mkdir()
    rows = []
    for slot in SLOTS:
        name = f"e1_{slot}.png"
        image = (breast_phantom(50, 40) * 4095).astype(np.uint16)
        Image.fromarray(image).save(data / name)
        rows.append([name, "9.9", slot.laterality.value, slot.view.value])
    views = tmp_path / "views.csv"
    with views.open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "study_uid", "laterality", "view"], *rows])
    labels = tmp_path / "labels.csv"
    write_labels(
        labels,
        [{"patient_id": "P", "study_uid": "9.9", "outcome": "interval", "cancer_laterality": "L"}],
    )
    manifest = index_dataset(data, labels_csv=labels, views_csv=views)
    image = manifest.exams[0].images[Slot.parse("R-CC")]
    assert (image.path, image.source) == ("e1_R-CC.png", "png")
    # The trainer prepares PNG pixels with the node's preprocessing (orientation from laterality).
    cache = ImageCache(tmp_path / "cache", PreprocessSettings(input_size=32, roi_size=16))
    cache.build(manifest, DistInfo(0, 1, 0, torch.device("cpu")), Reporter(enabled=False))
    geometry = cache.geometries[image.sop_instance_uid]
    assert geometry.flipped and geometry.orientation_rule is OrientationRule.LATERALITY
    assert cache.scaled(image.sop_instance_uid).shape == geometry.scaled_shape == (40, 32)
    assert not cache.failed


def test_bad_labels_name_the_row_and_the_value(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    write_labels(
        labels,
        [{"patient_id": "P", "study_uid": "1", "outcome": "cancer", "cancer_laterality": "L"}],
    )
    with pytest.raises(DataError, match=r"labels\.csv:2: outcome should be one of .* 'cancer'"):
        read_labels(labels)
    labels.write_text("patient,study\n")
    with pytest.raises(DataError, match="lacks column"):
        read_labels(labels)
