"""The worklist and an exam page in a real browser (headless Chromium, Debian package).

Chromium loads the pages from a real server, the DOM it built is checked, and screenshots are
kept in artifacts/web/ (CI keeps that folder). The screenshot of the exam page is also read back:
the heat map and the ROI boxes must have been drawn on the images.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.site import Site, extra_server, running_site

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "web"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise AssertionError("chromium not installed: `make test` installs the Debian package")


def browse(
    url: str, profile: Path, *, screenshot: Path | None = None, size: str = "1600,1000"
) -> str:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={size}",
        "--virtual-time-budget=8000",
    ]
    command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    run = subprocess.run([*command, url], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("browser")
    # loopback_without_token: the browser on this machine is a signed-in user
    with running_site(
        data_dir, f"sqlite:///{data_dir / 'node.db'}", loopback_without_token=True
    ) as built:
        yield built


def test_worklist_and_exam_page_in_chromium(site: Site, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / "profile"
    name = str(site.scored.datasets[next(iter(site.scored.datasets))].PatientName)

    worklist = browse(f"{site.base}/", profile)
    rows = re.findall(r'<tr class="exam" data-study="([^"]+)" data-state="([^"]+)"', worklist)
    assert rows == [(site.partial.study_uid, "partial"), (site.scored.study_uid, "scored")]
    assert name.replace("^", " ") in worklist and "+4.25" in worklist
    browse(f"{site.base}/", profile, screenshot=ARTIFACTS / "worklist.png")

    exam_url = f"{site.base}/exams/{site.scored.study_uid}"
    dom = browse(exam_url, profile)
    slots = re.findall(r'<figure class="view [^"]*" data-slot="([^"]+)"', dom)
    assert slots == ["R-CC", "L-CC", "R-MLO", "L-MLO"]
    for slot, score in (
        ("R-CC", "+2.75"),
        ("L-CC", "-1.25"),
        ("R-MLO", "+1.50"),
        ("L-MLO", "-0.50"),
    ):
        figure = dom.split(f'data-slot="{slot}"', 1)[1].split("</figure>", 1)[0]
        assert f'<span class="ensemble">{score}</span>' in figure
        assert 'class="base"' in figure and 'class="heat"' in figure and "<rect" in figure
    assert 'id="exam-score"' in dom and "+4.25" in dom

    shots = {}
    for variant, query in (("exam", ""), ("exam-plain", "?heat=0&boxes=0")):
        shot = ARTIFACTS / f"{variant}.png"
        browse(exam_url + query, profile, screenshot=shot, size="1600,1300")
        shots[variant] = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    on, off = shots["exam"], shots["exam-plain"]
    changed = np.abs(on - off).sum(axis=2) > 60
    saturated = (on.max(axis=2) - on.min(axis=2)) > 80
    assert (changed & saturated).sum() > 2000, "switching the heat map on changed nothing"
    r, g, b = on[..., 0], on[..., 1], on[..., 2]
    green = (g > 200) & (r < 120) & (b < 140)  # the ROI outlines
    assert (green & changed).sum() > 200, "no ROI box drawn over the images"

    browse(
        f"{site.base}/exams/{site.partial.study_uid}",
        profile,
        screenshot=ARTIFACTS / "exam-partial.png",
        size="1600,1300",
    )

    with extra_server(site, {"loopback_without_token": False}) as anonymous:
        dom = browse(f"{anonymous}/exams/{site.scored.study_uid}", profile)
        assert name.replace("^", " ") not in dom and 'name="token"' in dom  # sign-in page
        browse(f"{anonymous}/", profile, screenshot=ARTIFACTS / "worklist-anonymous.png")
