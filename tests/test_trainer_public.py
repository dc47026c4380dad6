"""Public dataset readers, each on a fixture written in that dataset's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammo_node.synth import SynthOptions
from mammo_node.synth.public_layouts import (
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


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_reader_indexes_its_layout_with_the_right_exams_slots_and_labels(
    fmt: str, tmp_path: Path
) -> None:
    written = WRITERS[fmt](tmp_path / "data", OPTIONS)
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "data"), "--format", fmt, "--out", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exams"] == len(Manifest.load(tmp_path / "m.json").exams)
    manifest = Manifest.load(tmp_path / "m.json")
    by_key = {e.study_uid: e for e in manifest.exams}
    expected = {w.key: w for w in written}
    assert set(by_key) == set(expected)  # every fixture exam has both views of a breast
    for key, exam in by_key.items():
        truth = expected[key]
        assert sorted(exam.images) == sorted(truth.slots)
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
    assert all(by_key[k].outcome == "normal" for k in interval)  # no dataset knows them
    if fmt == "vindr":  # BI-RADS 4-5 boxes give the lesion truth of positive images
        positives = {
            i.sop_instance_uid
            for e in manifest.exams
            for s, i in e.images.items()
            if image_label(e, s)
        }
        assert manifest.truth and set(manifest.truth) <= positives
    if fmt in ("cmmd", "cbis-ddsm"):  # one-breast exams are kept, both views required
        assert any(len(e.images) == 2 for e in manifest.exams)


def test_a_wrong_layout_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "data"), "--format", "rsna", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "train.csv" in result.output
