"""A calibrated bundle's reading of the exam score reaches every answer: the result row,
`exams show --json`, the exam report SR (DCM 111047 in %) and the worklist's triage by
category. The packaged demo bundle carries a calibration fitted on held-out synthetic exams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from mammo_node.db.models import Instance
from mammo_node.exams import exam_detail
from mammo_node.ml.bundle import default_bundle_path, load_bundle
from mammo_node.web.worklist import worklist
from tests.helpers.tools import storescu, wait_for


def _numbers(ds: Any) -> list[tuple[str, str, float]]:
    """(concept code, unit code, value) of every NUM item in an SR content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "NUM":
            value = item.MeasuredValueSequence[0]
            found.append(
                (
                    item.ConceptNameCodeSequence[0].CodeValue,
                    value.MeasurementUnitsCodeSequence[0].CodeValue,
                    float(value.NumericValue),
                )
            )
        found.extend(_numbers(item))
    return found


def test_a_calibrated_bundle_gives_probability_and_category_in_every_answer(
    node_factory: Any, synth_exams: list[Any]
) -> None:
    calibration = load_bundle(default_bundle_path(), device="cpu").calibration
    assert calibration is not None and calibration.category_edges, "demo bundle lost its scale"
    node = node_factory(score=True)  # the packaged demo bundle
    for exam in synth_exams:
        assert storescu(node.scp.port, exam.files).returncode == 0
    studies = [exam.study_uid for exam in synth_exams]
    for study in studies:
        wait_for(lambda s=study: exam_detail(node.db, s)["state"] == "scored", timeout=180)

    categories = {}
    for study in studies:
        result = exam_detail(node.db, study)["result"]
        score = result["exam_score"]
        assert result["probability"] == pytest.approx(calibration.probability(score))
        assert result["category"] == calibration.category(score)
        assert 1 <= result["category"] <= 10
        categories[study] = result["category"]
        with node.db.read() as session:
            rel = session.scalars(
                select(Instance.rel_path).where(
                    Instance.sop_instance_uid == result["sr_sop_instance_uid"]
                )
            ).one()
        numbers = _numbers(dcmread(Path(node.store.path(rel))))
        probability = [v for code, unit, v in numbers if code == "111047" and unit == "%"]
        assert probability == [pytest.approx(100.0 * result["probability"], abs=1e-4)]

    ranked = worklist(node.db, sort="category")
    shown = [row.result.category for row in ranked if row.result is not None]
    assert shown == sorted(shown, reverse=True)
    top = max(categories.values())
    triaged = worklist(node.db, min_category=top)
    assert {row.study_uid for row in triaged} == {s for s, c in categories.items() if c >= top}
    with pytest.raises(ValueError, match="min_category"):
        worklist(node.db, min_category=11)
