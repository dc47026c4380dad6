"""Public dataset readers, each on a fixture written in that dataset's layout."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammo_node.domain import Slot
from mammo_node.synth import SynthOptions
from mammo_node.synth.public_layouts import (
    Habits,
    WrittenExam,
    write_cbis_ddsm_layout,
    write_cmmd_layout,
    write_rsna_layout,
    write_vindr_layout,
)
from trainer.cli import app
from trainer.data import Manifest, image_label

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = SynthOptions(
    rows=80,
    columns=64,
    exams=8,
    seed=31,
    screening_fraction=0.5,
    interval_fraction=0.125,
    repeat_patient_fraction=0.0,
)
WRITERS = {
    "rsna": write_rsna_layout,
    "vindr": write_vindr_layout,
    "cmmd": write_cmmd_layout,
    "cbis-ddsm": write_cbis_ddsm_layout,
}


ONE_BREAST_OK = {"cmmd", "cbis-ddsm"}  # readers that keep a breast imaged in both views
VARIANTS = {  # what engineers have on disk besides the published layout
    "published": {f: Habits() for f in WRITERS},
    "download": {  # where a download puts the files
        "rsna": Habits(top_folder="rsna-breast-cancer-detection", extension=".DICOM"),
        "vindr": Habits(top_folder="1.0.0", extension=".dcm"),
        "cmmd": Habits(top_folder="manifest-1616439774456/CMMD"),
        "cbis-ddsm": Habits(top_folder="CBIS-DDSM", tables_beside_images=True),
    },
    "tables": {f: Habits(messy_tables=True) for f in WRITERS},  # header and value spellings
    "partial": {f: Habits(missing_files=3) for f in WRITERS},  # an interrupted download
    "downloaders": {  # TCIA's NBIA Data Retriever: manifest-<n>/<collection>/, tables
        # elsewhere; PhysioNet's wget -r: physionet.org/files/<name>/<version>/
        "rsna": Habits(top_folder="kaggle/rsna-breast-cancer-detection"),
        "vindr": Habits(top_folder="physionet.org/files/vindr-mammo/1.0.0"),
        "cmmd": Habits(top_folder="tcia/manifest-1616439774456/CMMD"),
        "cbis-ddsm": Habits(top_folder="manifest-ZkhPvrLo5216730872708713142/CBIS-DDSM"),
    },
}


def expected_slots(fmt: str, written: WrittenExam) -> list[Slot] | None:
    """The slots the reader should keep, or None when the exam should be left out."""
    on_disk = [s for s in written.slots if s not in written.missing]
    complete = {lat for lat in "LR" if {f"{lat}-CC", f"{lat}-MLO"} <= {str(s) for s in on_disk}}
    if fmt not in ONE_BREAST_OK:
        return sorted(on_disk) if len(on_disk) == 4 else None
    if not complete or not written.cancer_sides <= complete:
        return None
    return sorted(s for s in on_disk if s.laterality.value in complete)


def index(fmt: str, data: Path, out: Path) -> Manifest:
    result = CliRunner().invoke(app, ["index", str(data), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exams"] == len(Manifest.load(out).exams)
    return Manifest.load(out)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_reader_indexes_its_layout_with_the_right_exams_slots_and_labels(
    fmt: str, variant: str, tmp_path: Path
) -> None:
    written = WRITERS[fmt](tmp_path / "data", OPTIONS, habits=VARIANTS[variant][fmt])
    manifest = index(fmt, tmp_path / "data", tmp_path / "m.json")
    by_key = {e.study_uid: e for e in manifest.exams}
    expected = {w.key: w for w in written if expected_slots(fmt, w) is not None}
    assert set(by_key) == set(expected)
    for key, exam in by_key.items():
        truth = expected[key]
        assert sorted(exam.images) == expected_slots(fmt, truth)
        assert exam.outcome == ("screening" if truth.cancer_sides else "normal")
        for slot, image in exam.images.items():
            assert image_label(exam, slot) == int(slot.laterality.value in truth.cancer_sides)
            if fmt in ("rsna", "vindr", "cbis-ddsm"):
                assert image.sop_instance_uid.endswith(truth.sop_of[slot])
            else:
                assert image.sop_instance_uid == truth.sop_of[slot]
            assert (manifest.data_dir / image.path).is_file()
    assert any(e.outcome == "screening" for e in manifest.exams)
    assert any(e.outcome == "normal" for e in manifest.exams)
    interval = [w.key for w in written if w.exam.outcome == "interval"]
    assert all(by_key[k].outcome == "normal" for k in interval if k in by_key)
    if fmt == "vindr":  # BI-RADS 4-5 boxes give the lesion truth of positive images
        positives = {
            i.sop_instance_uid
            for e in manifest.exams
            for s, i in e.images.items()
            if image_label(e, s)
        }
        assert manifest.truth and set(manifest.truth) <= positives
    if fmt in ONE_BREAST_OK:  # one-breast exams are kept, both views required
        assert any(len(e.images) == 2 for e in manifest.exams)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_a_partial_download_leaves_out_the_exams_it_broke_with_a_reason_and_one_log_line(
    fmt: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = WRITERS[fmt](tmp_path / "data", OPTIONS, habits=Habits(missing_files=3))
    with caplog.at_level(logging.WARNING, logger="trainer.public"):
        manifest = index(fmt, tmp_path / "data", tmp_path / "m.json")
    broken = {w.key: w for w in written if w.missing}
    assert len(broken) == 3
    left_out = {x["study_uid"]: x for x in manifest.excluded if x["reason"] == "file_missing"}
    gone = {k for k, w in broken.items() if expected_slots(fmt, w) is None}
    assert gone and set(left_out) == gone
    names = {str(ds.PatientName) for w in written for ds in w.exam.datasets.values()}
    for key, entry in left_out.items():
        assert not any(name in entry["detail"] for name in names)
        lost = broken[key].missing
        if fmt == "cmmd" and len(lost) == len(broken[key].slots):  # the whole patient
            assert "no DICOM file" in entry["detail"]
        else:
            assert all(str(slot) in entry["detail"] for slot in lost)
    summary = [r.getMessage() for r in caplog.records if "Not on disk" in r.getMessage()]
    assert len(summary) == 1, summary
    if fmt != "cmmd":  # CMMD lists patients, not images
        assert summary[0].startswith("Not on disk: 3 listed image(s)")


def test_a_download_with_no_complete_exam_says_how_many_files_are_missing(
    tmp_path: Path,
) -> None:
    WRITERS["rsna"](tmp_path / "data", OPTIONS, habits=Habits(missing_files=OPTIONS.exams))
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "data"), "--format", "rsna", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2
    assert "No usable exam" in result.output
    assert f"not on disk: {OPTIONS.exams} listed image(s)" in result.output


def test_cmmd_takes_the_woman_from_patient_id_and_leaves_out_one_not_in_the_table(
    tmp_path: Path,
) -> None:
    habits = Habits(top_folder="manifest-1616439774456/CMMD")
    written = write_cmmd_layout(tmp_path / "data", OPTIONS, habits=habits)
    table = tmp_path / "data" / "CMMD_clinicaldata_revision.csv"
    dropped = written[1].key
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(line for line in lines if not line.startswith(f"{dropped},")))
    manifest = index("cmmd", tmp_path / "data", tmp_path / "m.json")
    assert dropped not in {e.study_uid for e in manifest.exams}
    assert {e.patient_id for e in manifest.exams} <= {w.key for w in written}
    unlisted = [x for x in manifest.excluded if x["reason"] == "not_in_clinical_table"]
    study = str(next(iter(written[1].exam.datasets.values())).StudyInstanceUID)
    assert [x["study_uid"] for x in unlisted] == [study]


def test_a_wrong_layout_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "data"), "--format", "rsna", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "train.csv" in result.output


def test_a_label_value_the_reader_cannot_read_names_the_row(tmp_path: Path) -> None:
    write_rsna_layout(tmp_path / "data", OPTIONS)
    table = tmp_path / "data" / "train.csv"
    header, first, *rest = table.read_text().splitlines(keepends=True)
    cancer = header.split(",").index("cancer")
    cells = first.split(",")
    cells[cancer] = "maybe"
    table.write_text("".join([header, ",".join(cells), *rest]))
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "data"), "--format", "rsna", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2
    assert "train.csv row 2, cancer" in result.output and "'maybe'" in result.output


def test_two_copies_of_a_dataset_at_the_same_depth_are_refused_by_name(tmp_path: Path) -> None:
    small = SynthOptions(rows=64, columns=64, exams=2, seed=5)
    for copy in ("a/rsna-breast-cancer-detection", "b/rsna-breast-cancer-detection"):
        write_rsna_layout(tmp_path / "data", small, habits=Habits(top_folder=copy))
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "data"), "--format", "rsna", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code != 0
    assert 'Several "train.csv"' in result.output
    assert "a/rsna-breast-cancer-detection, b/rsna-breast-cancer-detection" in result.output
