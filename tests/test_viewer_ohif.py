"""A real viewer shows the results: OHIF 3.12.10 (headless Chromium) over a scored exam.

Runs ../shared/tools/ohif-check/check.sh over a 4-view exam and every object OHIF can display
(TID 1500 reports, SC, SEG; it displays neither Mammography CAD SR nor GSPS), once for an exam
of the project's generator (mammo-node synth) and once for the real NYU exam wrapped as DICOM.
Screenshots and summary.json are kept in artifacts/ohif/<case>/ (CI keeps them). The test checks
what the summary says: every MG image displays, every SR draws its box with the expected
"<concept>: <value>" label, every SEG is overlaid.

Why this passes on a quiet machine and with the other core busy. OHIF 3.12.10's SR viewport
sometimes renders the image before it has set the SR's tracking UIDs and never redraws, so the
read-only SR display shows no box (reproduced with a forced render(), which then draws it). The
check tool then answers the viewer's "track measurements?" prompt; our region group hydrates as a
RectangleROI labelled with the score (see mammo_node.writers.sr), drawn by the regular tools
path, which has no such race. Either way the box and the score label show; the check waits for
the SR's first text (up to 30 s more) instead of a fixed sleep, and the test asserts on what it
found, not on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.environment import SHARED
from tests.helpers.writers import OHIF_KINDS, make_inference, write_outputs, write_scored_exam

REPO = Path(__file__).resolve().parents[1]
CHECK = Path(os.environ.get("MAMMO_OHIF_CHECK", SHARED / "tools/ohif-check/check.sh"))
ARTIFACTS = REPO / "artifacts" / "ohif"
VIEWS = ("L-CC", "L-MLO", "R-CC", "R-MLO")
# settle time after each page load / click (the tool's default is 8 s); the check also waits
# for the SR's first text, up to 30 s more. 5 s held with the other core busy (load 6: the
# generator case passed at 4 s in 260 s, against 455 s at 8 s)
SETTLE_MS = os.environ.get("SETTLE_MS", "5000")


def _keep_artifacts(shots: Path, case: str) -> Path:
    target = ARTIFACTS / case
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in shots.iterdir():
        if path.suffix in (".png", ".json", ".log", ".tsv"):
            shutil.copy2(path, target / path.name)
    return target


def _by_description(items: list[dict[str, Any]], word: str) -> list[dict[str, Any]]:
    return [i for i in items if word in i["description"]]


def _nyu_exam(folder: Path) -> list[Path]:
    from mammo_node.domain import Slot
    from mammo_node.synth import wrap

    realdata = SHARED / "realdata" / "nyu-gmic-exam0__nyukat-GMIC"
    if not realdata.is_dir():
        pytest.fail(f"real data not found at {realdata}")
    datasets = wrap.wrap_nyu_exam(realdata)
    exam = {Slot.parse(f"{ds.ImageLaterality}-{ds.ViewPosition}"): ds for ds in datasets}
    return write_outputs(folder, exam, make_inference(exam), kinds=OHIF_KINDS)


def _run_check(folder: Path, shots: Path, case: str) -> dict[str, Any]:
    if not CHECK.is_file():
        pytest.fail(f"ohif-check not found at {CHECK} (set MAMMO_OHIF_CHECK)")
    run = subprocess.run(
        ["bash", str(CHECK), str(folder)],
        env={**os.environ, "OUT": str(shots), "SETTLE_MS": SETTLE_MS},
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    if run.returncode == 2:
        pytest.fail(
            f"ohif-check is not set up (`make viewer-tools` runs its setup.sh): {run.stderr[-500:]}"
        )
    kept = _keep_artifacts(shots, case) if shots.is_dir() else ARTIFACTS
    assert run.returncode == 0, f"OHIF check failed; see {kept}:\n{run.stdout[-4000:]}"
    return json.loads((shots / "summary.json").read_text())


def _assert_every_view_displays(summary: dict[str, Any], files: list[Path]) -> None:
    assert summary["ohifVersion"] == "3.12.10"
    assert summary["uploads"] == {"ok": len(files), "rejected": []}
    verdict = summary["verdict"]
    assert verdict["allOk"] and verdict["imageDisplayed"]
    assert verdict["dicomLint"] == []

    reports = verdict["srDisplayed"]
    assert len(reports) == 5  # exam report + one per view
    for report in reports:
        assert report["displayed"] and report["labelsExpected"] == report["labelsFound"] == 1
    for view in VIEWS:
        assert len(_by_description(reports, f"report {view}")) == 1
    assert len(_by_description(reports, "exam report")) == 1

    segs = verdict["segOverlayDisplayed"]
    assert sorted(s["description"].split()[-2] for s in segs) == sorted(VIEWS)
    assert all(s["overlay"] for s in segs)
    (sc,) = [d for d in verdict["otherDisplaySets"] if d["modality"] == "OT"]
    assert sc["displayed"] and "DEMO" in sc["description"]

    study = summary["studies"][0]
    for shown in study["displaySets"]:
        if shown["modality"] != "SR":
            continue
        assert shown["labelsMissing"] == []
        texts = " | ".join(shown["annotationTexts"])
        # the box is drawn: by the SR display (its score label) or, hydrated, as a RectangleROI
        assert "{score}" in texts or "Area:" in texts, shown["annotationTexts"]
        # the centre of attention is not shown as a probe with a pixel value (no "(x, y, 0)")
        assert ", 0)" not in texts, shown["annotationTexts"]


@pytest.mark.viewer
@pytest.mark.timeout(1200)
def test_ohif_displays_every_view_report_and_segmentation(tmp_path: Path) -> None:
    files = write_scored_exam(tmp_path / "exam", rows=256, columns=208, seed=3, kinds=OHIF_KINDS)
    summary = _run_check(tmp_path / "exam", tmp_path / "shots", "synth")
    _assert_every_view_displays(summary, files)


@pytest.mark.viewer
@pytest.mark.timeout(1200)
def test_ohif_displays_the_real_exam_results(tmp_path: Path) -> None:
    files = _nyu_exam(tmp_path / "exam")
    summary = _run_check(tmp_path / "exam", tmp_path / "shots", "nyu")
    _assert_every_view_displays(summary, files)
