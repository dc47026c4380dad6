"""Monitoring and drift: the statistics, then /monitor, its plots and /metrics on a running
node that scored real exams, looked at in headless Chromium (screenshot in artifacts/web/)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from mammo_node.db.models import Exam, Result
from mammo_node.db.session import Database
from mammo_node.observe.monitor import (
    ScoredExam,
    calibration_categories,
    category_drift_by_week,
    category_psi,
    drift_by_week,
    group_stats,
    iso_week,
    ks_statistic,
    psi,
)
from tests.helpers.nodeops import scoring_node
from tests.test_web_browser import ARTIFACTS, browse

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)  # a Thursday: +-0.5 day stays in its week


def _exam(days_ago: float, score: float, **kw: Any) -> ScoredExam:
    at = NOW - dt.timedelta(days=days_ago)
    values: dict[str, Any] = {
        "week": iso_week(at),
        "at": at,
        "scanner": "ACME M1",
        "model": "site 1.0",
        "score": score,
        "verdicts": {"sensitivity_90": score > 0},
        "seconds_to_result": 12.0,
    }
    values.update(kw)
    return ScoredExam(**values)


def test_psi_is_small_for_the_same_population_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, rng.normal(0, 1, 2000)) < 0.02
    assert psi(reference, rng.normal(1.0, 1, 2000)) > 0.25
    with pytest.raises(ValueError, match="both populations"):
        psi(reference, [])
    from scipy.stats import ks_2samp

    shifted = rng.normal(0.3, 1, 700)
    assert ks_statistic(reference, shifted) == pytest.approx(ks_2samp(reference, shifted).statistic)


def test_drift_against_the_first_weeks_or_the_calibration_population() -> None:
    rng = np.random.default_rng(1)
    exams = [_exam(28 + (i % 5) * 0.1, s) for i, s in enumerate(rng.normal(-2, 1, 60))]
    exams += [_exam(7 + (i % 5) * 0.1, s) for i, s in enumerate(rng.normal(-2, 1, 60))]
    exams += [_exam((i % 5) * 0.1, s) for i, s in enumerate(rng.normal(0, 1, 60))]  # shifted
    rows = drift_by_week(exams, threshold=0.25, min_exams=20, reference_weeks=1, calibration={})
    by_week = {r.week: r for r in rows}
    first, middle, last = sorted(by_week)
    assert by_week[first].psi is None  # the reference week itself
    assert by_week[middle].psi is not None and not by_week[middle].alert
    assert by_week[last].alert and by_week[last].psi > 0.25
    assert "first 1 week" in by_week[last].reference
    calibrated = drift_by_week(
        exams,
        threshold=0.25,
        min_exams=20,
        reference_weeks=1,
        calibration={"site 1.0": list(rng.normal(0, 1, 500))},
    )
    assert [r.alert for r in calibrated] == [True, True, False]
    assert "calibration population (500)" in calibrated[0].reference

    stats = group_stats([_exam(0, 1.0), _exam(0, -1.0), _exam(0, 2.0)], ["sensitivity_90"])
    assert len(stats) == 1 and stats[0].exams == 3
    assert stats[0].recall_rate["sensitivity_90"] == pytest.approx(2 / 3)
    assert stats[0].score_p50 == 1.0


def test_category_drift_against_the_calibration_deciles_or_the_first_weeks(
    tmp_path: Path,
) -> None:
    deciles = [0.1] * 10
    assert category_psi(deciles, list(range(1, 11)) * 5) == pytest.approx(0.0)
    assert category_psi(deciles, [9, 10] * 20) > 2.0  # every exam in the top fifth
    with pytest.raises(ValueError, match="1-10"):
        category_psi(deciles, [0, 3])

    # a calibrated bundle: its categories are its population's deciles, 10 % each
    from mammo_node.ml.calibration import Calibration

    calibration = Calibration(
        method="platt",
        prevalence=0.007,
        fitted_prevalence=0.3,
        slope=1.0,
        category_edges=tuple(float(e) for e in range(-4, 5)),
    )
    (tmp_path / "manifest.json").write_text(
        json.dumps({"name": "site", "version": "1.0", "calibration": calibration.to_json()})
    )
    reference = calibration_categories(tmp_path)
    assert reference == {"site 1.0": ([0.1] * 10, "calibration population (deciles)")}
    assert calibration_categories(tmp_path / "nowhere") == {}

    rng = np.random.default_rng(3)
    spread = [int(c) for c in rng.integers(1, 11, 200)]
    exams = [_exam(14 + (i % 5) * 0.1, 0.0, category=c) for i, c in enumerate(spread[:100])]
    exams += [_exam(7 + (i % 5) * 0.1, 0.0, category=c) for i, c in enumerate(spread[100:])]
    exams += [_exam((i % 5) * 0.1, 0.0, category=7 + i % 4) for i in range(60)]  # shifted up
    exams += [_exam(0.1, 0.0, category=None)]  # an uncalibrated result counts nowhere
    rows = category_drift_by_week(
        exams, threshold=0.25, min_exams=20, reference_weeks=1, calibration=reference
    )
    assert [r.alert for r in rows] == [False, False, True]
    assert rows[-1].exams == 60 and sum(rows[-1].shares[6:]) == pytest.approx(1.0)
    assert rows[0].psi is not None and rows[0].psi < 0.25
    # no calibration for that version: its own first week is the reference
    own = category_drift_by_week(
        exams, threshold=0.25, min_exams=20, reference_weeks=1, calibration={}
    )
    assert own[0].psi is None and "first 1 week" in own[0].reference
    assert [r.alert for r in own[1:]] == [False, True]


def _backdate_history(db_url: str, weeks_ago: int, count: int, mean: float) -> str:
    """Results of earlier weeks for the exams the node scored (monitoring needs history)."""
    db = Database(db_url)
    try:
        with db.session() as session:
            template = session.scalars(select(Result).order_by(Result.id)).first()
            assert template is not None
            exam = session.get(Exam, template.exam_fk)
            assert exam is not None
            rng = np.random.default_rng(2)
            for i in range(count):
                session.add(
                    Result(
                        exam_fk=exam.id,
                        exam_revision=exam.revision,
                        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(weeks=weeks_ago, hours=i),
                        model_name=template.model_name,
                        model_version=template.model_version,
                        exam_score=float(rng.normal(mean, 0.3)),
                        verdicts={k: False for k in template.verdicts},
                        sr_sop_instance_uid=template.sr_sop_instance_uid,
                        manufacturer=template.manufacturer,
                        manufacturer_model=template.manufacturer_model,
                        bundle_sha256=template.bundle_sha256,
                        category=1 + i % 10,  # spread as the calibration population's deciles
                    )
                )
            return f"{template.model_name} {template.model_version}"
    finally:
        db.dispose()


def _calibrated(bundle: Path, out: Path) -> Path:
    """The tiny bundle with a calibration whose deciles all lie below its scores: every exam
    it scores is a category 10, as after a shift no score threshold shows."""
    import shutil

    from mammo_node.ml.calibration import Calibration

    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["calibration"] = Calibration(
        method="platt",
        prevalence=0.007,
        fitted_prevalence=0.3,
        slope=1.0,
        category_edges=tuple(-1e6 + i for i in range(9)),
    ).to_json()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_monitor_page_plots_and_drift_alert_on_a_running_node(
    node_process: Any, tmp_path: Path, tiny_bundle: Path, synth_exams: list[Any], db_url: str
) -> None:
    node = scoring_node(
        node_process,
        tmp_path / "data",
        _calibrated(tiny_bundle, tmp_path / "bundle"),
        db_url=db_url,
        env={"MAMMO_DRIFT_MIN_EXAMS": "3", "MAMMO_DRIFT_REFERENCE_WEEKS": "1"},
    ).start()
    from tests.helpers.nodeops import exam_json
    from tests.helpers.tools import storescu, wait_for

    for exam in synth_exams:
        assert storescu(node.port, exam.files).returncode == 0
    for exam in synth_exams:
        wait_for(lambda e=exam: exam_json(node, e.study_uid)["state"] == "scored", timeout=180)
    base = f"http://127.0.0.1:{node.http_port}"
    first = httpx.get(f"{base}/api/monitor", timeout=60).json()
    (group,) = first["groups"]
    assert group["exams"] == 3 and group["scanner"] != "unknown"
    assert group["week"] == iso_week(dt.datetime.now(dt.UTC))
    assert first["drift"][0]["psi"] is None  # one week: it is its own reference
    # the categories drift against the calibration population from the first week on
    (categories,) = first["category_drift"]
    assert categories["exams"] == 3 and categories["shares"][9] == 1.0
    assert categories["alert"] and categories["psi"] > 0.25
    assert categories["reference"] == "calibration population (deciles)"

    model = _backdate_history(db_url, weeks_ago=3, count=30, mean=-40.0)
    report = httpx.get(f"{base}/api/monitor", timeout=60).json()
    assert sum(g["exams"] for g in report["groups"]) == 33
    latest = report["drift"][-1]
    assert latest["model"] == model and latest["alert"] and latest["psi"] > 0.25
    earlier, now = report["category_drift"]  # 3 weeks ago: spread as the deciles
    assert earlier["exams"] == 30 and earlier["psi"] == pytest.approx(0.0) and not earlier["alert"]
    assert now["alert"]

    metrics = httpx.get(f"{base}/metrics", timeout=60).text
    assert f'mammo_monitor_drift_alert{{model="{model}"}} 1.0' in metrics
    assert "mammo_monitor_exams_scored{" in metrics and "mammo_storage_free_bytes" in metrics
    assert 'mammo_monitor_exam_score{model="' in metrics and 'quantile="0.5"' in metrics
    assert f'mammo_monitor_category_drift_alert{{model="{model}"}} 1.0' in metrics

    for name in ("exams", "scores", "recall", "drift", "categories", "time"):
        png = httpx.get(f"{base}/monitor/plots/{name}.png", timeout=60)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        image = np.asarray(Image.open(io.BytesIO(png.content)).convert("L"))
        assert image.shape == (320, 750) and image.std() > 5, name
    assert httpx.get(f"{base}/monitor/plots/nope.png", timeout=30).status_code == 404
    page = httpx.get(f"{base}/monitor", timeout=60).text
    assert "Model monitoring" in page and "ALERT" in page and model in page
    assert "Category drift</b>" in page and "calibration population (deciles)" in page
    if db_url.startswith("sqlite"):  # the same report on both databases: one look in Chromium
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        dom = browse(f"{base}/monitor", tmp_path / "profile")
        assert "Model monitoring" in dom and "ALERT" in dom and model in dom
        shot = ARTIFACTS / "monitor.png"
        browse(f"{base}/monitor", tmp_path / "profile", screenshot=shot, size="1600,2200")
        picture = np.asarray(Image.open(shot).convert("L"))
        assert picture.std() > 10  # the plots were drawn, not a blank page
    assert node.stop() == 0
