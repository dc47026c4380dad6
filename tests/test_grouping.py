"""Slot reading order, single-image rules, exam-level resolution and readiness (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import Dataset

from mammo_node.domain import SLOTS, ExamState, Laterality, NotScoredReason, Slot, View
from mammo_node.grouping.rules import (
    BREAST_TOMOSYNTHESIS,
    MG_PROCESSING,
    SECONDARY_CAPTURE,
    ImageFacts,
    classify,
    decide,
    resolve,
)
from tests.factory import mg_dataset

LCC = Slot(Laterality.L, View.CC)


def test_image_laterality_and_view_code_decide_first() -> None:
    ds = mg_dataset("L", "CC", Laterality="R", ViewPosition="MLO")
    facts = classify(ds)
    assert facts.slot == LCC
    assert (facts.laterality_source, facts.view_source) == ("ImageLaterality", "ViewCodeSequence")
    assert facts.rule is None


def test_falls_back_through_laterality_then_text() -> None:
    ds = mg_dataset(None, "MLO", Laterality="R")
    assert classify(ds).laterality_source == "Laterality"
    ds = mg_dataset(None, None, SeriesDescription="R MLO", ViewCodeSequence=None)
    facts = classify(ds)
    assert str(facts.slot) == "R-MLO"
    assert facts.laterality_source == "SeriesDescription"
    assert facts.view_source == "SeriesDescription"


def test_view_from_patient_orientation_misuse_and_protocol_name() -> None:
    ds = mg_dataset("R", None, PatientOrientation=["CC"], ViewCodeSequence=None)
    assert classify(ds).view_source == "PatientOrientation"
    ds = mg_dataset(None, None, ProtocolName="LMLO screening")
    assert str(classify(ds).slot) == "L-MLO"


def test_frame_laterality_in_functional_groups() -> None:
    anatomy = Dataset()
    anatomy.FrameLaterality = "R"
    group = Dataset()
    group.FrameAnatomySequence = [anatomy]
    ds = mg_dataset(None, "CC", SharedFunctionalGroupsSequence=[group])
    facts = classify(ds)
    assert facts.laterality == Laterality.R and facts.laterality_source == "FrameLaterality"


@pytest.mark.parametrize(
    ("tags", "rule"),
    [
        ({"SOPClassUID": BREAST_TOMOSYNTHESIS}, NotScoredReason.TOMOSYNTHESIS),
        ({"ViewPosition": "XCCL", "ViewCodeSequence": None}, NotScoredReason.NON_SCREENING_VIEW),
        ({"ViewPosition": None, "ViewCodeSequence": None}, NotScoredReason.UNKNOWN_VIEW),
        ({"ImageLaterality": "B"}, NotScoredReason.UNKNOWN_LATERALITY),
        ({"PixelData": None}, NotScoredReason.NOT_AN_IMAGE),
        ({"SamplesPerPixel": 3}, NotScoredReason.UNSUPPORTED_PIXELS),
        ({"SOPClassUID": SECONDARY_CAPTURE, "ConversionType": "WSD"}, NotScoredReason.NOT_AN_IMAGE),
    ],
)
def test_single_image_rules(tags: dict[str, object], rule: NotScoredReason) -> None:
    assert classify(mg_dataset("L", "CC", **tags)).rule == rule


def test_spot_compression_modifier_is_not_a_screening_view() -> None:
    ds = mg_dataset("L", "CC")
    modifier = Dataset()
    modifier.CodeValue, modifier.CodingSchemeDesignator = "399055006", "SCT"
    modifier.CodeMeaning = "Spot Compression"
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = [modifier]
    facts = classify(ds)
    assert facts.rule == NotScoredReason.NON_SCREENING_VIEW
    assert "Spot Compression" in facts.rule_detail


def test_digitised_film_secondary_capture_is_a_candidate() -> None:
    ds = mg_dataset(
        None,
        "MLO",
        SOPClassUID=SECONDARY_CAPTURE,
        ConversionType="DF",
        Laterality="L",
        ViewCodeSequence=None,
        rows=640,
        columns=520,
    )
    facts = classify(ds)
    assert facts.rule is None and str(facts.slot) == "L-MLO"


def test_for_processing_is_flagged() -> None:
    assert classify(mg_dataset("L", "CC", SOPClassUID=MG_PROCESSING)).for_processing


def _facts(
    uid: str,
    slot: str | None,
    *,
    proc: bool = False,
    pixels: str = "ok",
    rule: NotScoredReason | None = None,
) -> ImageFacts:
    return ImageFacts(uid, Slot.parse(slot) if slot else None, proc, rule, "", pixels)


def test_resolve_fills_slots_and_explains_the_rest() -> None:
    images = [_facts(f"1.{i}", str(slot)) for i, slot in enumerate(SLOTS)]
    images += [
        _facts("2.1", "L-CC", proc=True),  # For Processing twin of L-CC
        _facts("2.2", "R-MLO", pixels="failed"),  # undecodable extra
        _facts("2.3", None, rule=NotScoredReason.TOMOSYNTHESIS),
    ]
    resolution = resolve(images)
    assert resolution.missing == []
    reasons = {n.sop_instance_uid: n.reason for n in resolution.not_scored}
    assert reasons == {
        "2.1": NotScoredReason.FOR_PROCESSING_TWIN,
        "2.2": NotScoredReason.UNDECODABLE,
        "2.3": NotScoredReason.TOMOSYNTHESIS,
    }


def test_two_candidates_for_one_slot_leave_it_empty() -> None:
    images = [_facts("1", "L-CC"), _facts("2", "L-CC"), _facts("3", "R-CC", proc=True)]
    resolution = resolve(images)
    assert resolution.slots[LCC] is None
    reasons = {n.sop_instance_uid: n.reason for n in resolution.not_scored}
    assert reasons["1"] == reasons["2"] == NotScoredReason.DUPLICATE_SLOT
    assert reasons["3"] == NotScoredReason.FOR_PROCESSING_ONLY


def test_decide_ready_after_quiet_partial_after_stable() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    full = resolve([_facts(f"1.{i}", str(s)) for i, s in enumerate(SLOTS)])
    kw = {"last_received_at": t0, "quiet_seconds": 10, "stable_seconds": 60}
    assert decide(full, now=t0 + dt.timedelta(seconds=5), **kw) is None
    ready = decide(full, now=t0 + dt.timedelta(seconds=10), **kw)
    assert ready is not None and ready.state == ExamState.READY
    three = resolve([_facts(f"1.{i}", str(s)) for i, s in enumerate(SLOTS[:3])])
    assert decide(three, now=t0 + dt.timedelta(seconds=59), **kw) is None
    partial = decide(three, now=t0 + dt.timedelta(seconds=60), **kw)
    assert partial is not None and partial.state == ExamState.PARTIAL
    assert partial.missing == ("R-MLO",) and "R-MLO" in partial.reason


def test_pending_pixel_check_holds_the_decision() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    images = [_facts(f"1.{i}", str(s), pixels="pending") for i, s in enumerate(SLOTS)]
    assert (
        decide(
            resolve(images),
            last_received_at=t0,
            now=t0 + dt.timedelta(hours=1),
            quiet_seconds=1,
            stable_seconds=2,
        )
        is None
    )
