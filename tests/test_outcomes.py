"""Outcomes in, training data out: outcomes imported on a running node link to its exams, the
monitor shows sensitivity and PPV, and `export-training` writes what `mammo-train index`
accepts and a manifest `mammo-train cv` trains on as is (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.nodeops import exam_json, scoring_node
from tests.helpers.tools import storescu, wait_for

HEADER = "study_uid,accession_number,outcome,cancer_laterality,reader1_L,reader1_R\n"


def _with_operating_points(bundle: Path, out: Path) -> Path:
    """The tiny bundle with two operating points: one recalls every exam, one none."""
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["operating_points"] = [
        {"name": "everyone", "threshold": -1e9, "sensitivity": None, "specificity": None},
        {"name": "no_one", "threshold": 1e9, "sensitivity": None, "specificity": None},
    ]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_outcomes_import_monitor_and_export_training(
    node_process: Any, tmp_path: Path, tiny_bundle: Path, synth_exams: list[Any], db_url: str
) -> None:
    bundle = _with_operating_points(tiny_bundle, tmp_path / "bundle")
    node = scoring_node(node_process, tmp_path / "data", bundle, db_url=db_url).start()
    for exam in synth_exams:
        assert storescu(node.port, exam.files).returncode == 0
    for exam in synth_exams:
        wait_for(lambda e=exam: exam_json(node, e.study_uid)["state"] == "scored", timeout=180)

    # a file with a bad row is refused whole, naming the line
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + f"{synth_exams[0].study_uid},,screening,L,1,0\n"
        + f"{synth_exams[1].study_uid},,cancer,X,,\n"
    )
    refused = node.cli("outcomes", "import", str(bad), check=False)
    assert refused.returncode == 2
    assert "line 3" in refused.stderr and "nothing imported" in refused.stderr

    first, second, third = synth_exams
    accession = str(second.datasets[next(iter(second.datasets))].AccessionNumber)
    rows = [
        f"{first.study_uid},,{first.outcome},{first.cancer_laterality},3,1",
        f",{accession},{second.outcome},{second.cancer_laterality},2,2",  # by accession
        f"{third.study_uid},,{third.outcome},{third.cancer_laterality},1,1",
        "1.2.826.0.1.999,,interval,R,,",  # an exam another node holds
    ]
    good = tmp_path / "outcomes.csv"
    good.write_text(HEADER + "\n".join(rows) + "\n")
    report = json.loads(node.cli("outcomes", "import", str(good), "--json").stdout)
    assert report["imported"] == 3 and report["updated"] == 0
    assert report["not_on_this_node"] == ["line 5: 1.2.826.0.1.999"]
    again = json.loads(node.cli("outcomes", "import", str(good), "--json").stdout)
    assert again["imported"] == 0 and again["updated"] == 3

    # sensitivity and PPV per model version and operating point
    monitor = httpx.get(f"http://127.0.0.1:{node.http_port}/api/monitor", timeout=60).json()
    assert monitor["operating_points"] == ["everyone", "no_one"]
    rows = {o["operating_point"]: o for o in monitor["outcomes"]}
    cancers = sum(e.outcome == "screening" for e in synth_exams)
    assert cancers >= 1
    assert rows["everyone"]["exams_with_outcome"] == 3 and rows["everyone"]["recalled"] == 3
    assert rows["everyone"]["sensitivity"] == 1.0
    assert rows["everyone"]["ppv"] == cancers / 3
    assert rows["no_one"]["recalled"] == 0 and rows["no_one"]["sensitivity"] == 0.0
    assert rows["no_one"]["ppv"] is None
    page = httpx.get(f"http://127.0.0.1:{node.http_port}/monitor", timeout=60).text
    assert "Against screening outcomes" in page and "100.0 %" in page

    export = tmp_path / "training"
    made = json.loads(node.cli("export-training", str(export), "--json").stdout)
    assert made["exams"] == 3 and made["images"] == 12 and made["excluded"] == []
    manifest = json.loads((export / "manifest.json").read_text())
    labels = (export / "labels.csv").read_text()
    # pseudonymous patients: the PatientID of the images is not in the labels
    for exam in synth_exams:
        assert exam.patient_id not in labels
    assert {e["study_uid"]: e["outcome"] for e in manifest["exams"]} == {
        e.study_uid: e.outcome for e in synth_exams
    }

    # the trainer indexes the export and loads the node's manifest as its own
    indexed = export / "indexed.json"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "mammo-train"),
            "index",
            str(export / "images"),
            "--labels",
            str(export / "labels.csv"),
            "--out",
            str(indexed),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    from trainer.data import Manifest, image_label

    theirs = Manifest.load(indexed)
    ours = Manifest.load(export / "manifest.json")
    assert theirs.excluded == [] and len(theirs.exams) == 3
    for exam in ours.exams:
        twin = theirs.exam(exam.study_uid)
        assert twin.outcome == exam.outcome and twin.cancer_laterality == exam.cancer_laterality
        assert {s: i.sop_instance_uid for s, i in twin.images.items()} == {
            s: i.sop_instance_uid for s, i in exam.images.items()
        }
        assert twin.readers == exam.readers and set(exam.readers) == {"reader1_L", "reader1_R"}
        assert all(ours.image_path(i).is_file() for i in exam.images.values())
    assert sum(image_label(e, s) for e in ours.exams for s in e.images) == 2 * sum(
        e.outcome == "screening" for e in synth_exams
    )
    assert node.stop() == 0
    if db_url.startswith("sqlite"):  # the export is the same files on both databases
        _cross_validate(export / "manifest.json", tmp_path / "run", synth_exams)


def _cross_validate(manifest: Path, run_dir: Path, synth_exams: list[Any]) -> None:
    """`mammo-train cv` on the node's own manifest, as small as the trainer goes: two folds,
    one epoch, 48 px, random initial weights (no ImageNet file needed)."""
    from typer.testing import CliRunner

    from tests.helpers.trainer import TINY_CV, one_torch_thread
    from trainer.cli import app

    args = ["cv", str(manifest), "--folds", "2", "--out", str(run_dir), "--quiet", *TINY_CV]
    with one_torch_thread():
        done = CliRunner().invoke(
            app, [*args, "--init", "scratch", "--no-tensorboard"], catch_exceptions=False
        )
    assert done.exit_code == 0, done.output
    with (run_dir / "cv_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # every exported image scored once, held out in one of the two folds
    assert len(rows) == 12 and {r["fold"] for r in rows} == {"0", "1"}
    assert {r["study_uid"] for r in rows} == {e.study_uid for e in synth_exams}
    assert all(math.isfinite(float(r["ensemble"])) for r in rows)
