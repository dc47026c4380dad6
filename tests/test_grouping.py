"""Slot reading order, single-image rules, exam-level resolution and readiness (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom import Dataset

from mammo_node.domain import (
    SLOTS,
    ExamState,
    Laterality,
    NotScoredReason,
    ObjectKind,
    ObjectRole,
    PixelCheck,
    Slot,
    View,
)
from mammo_node.grouping.rules import (
    BREAST_TOMOSYNTHESIS,
    MG_PROCESSING,
    SECONDARY_CAPTURE,
    ImageFacts,
    classify,
    decide,
    object_kind,
    resolve,
    selection_facts,
)
from tests.helpers.mg import mg_dataset

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


# --- site traffic: objects judged beside the study's others --------------------------------
def _image(ds: Dataset, pixels: str = "ok") -> ImageFacts:
    """ImageFacts as the index stores them, from a dataset's own tags."""
    c = classify(ds)
    return ImageFacts(
        str(ds.SOPInstanceUID),
        c.slot,
        c.for_processing,
        c.rule,
        c.rule_detail,
        PixelCheck(pixels),
        kind=object_kind(ds),
        instance_number=ds.get("InstanceNumber"),
        facts=selection_facts(ds),
    )


def _film(**tags: object) -> Dataset:
    """The issue's digitised film: SC, MG, BREAST, 16-bit greyscale, 4700 x 2600, WSD."""
    values: dict[str, object] = {
        "SOPClassUID": SECONDARY_CAPTURE,
        "ConversionType": "WSD",
        "BodyPartExamined": "BREAST",
        "BitsStored": 16,
        "rows": 4700,
        "columns": 2600,
    }
    values.update(tags)
    rows, columns = int(values.pop("rows")), int(values.pop("columns"))  # type: ignore[call-overload]
    ds = mg_dataset("L", "CC", rows=64, columns=48, **values)
    ds.Rows, ds.Columns = rows, columns  # header only: classify never reads the pixels
    return ds


@pytest.mark.parametrize(
    ("tags", "rule"),
    [
        ({}, None),  # digitised film, whatever its ConversionType
        ({"ConversionType": "DF", "BitsStored": 8, "rows": 1024, "columns": 1024}, None),
        ({"BitsStored": 8}, NotScoredReason.NOT_AN_IMAGE),  # 8-bit workstation screenshot
        ({"Modality": "OT", "BodyPartExamined": None}, NotScoredReason.NOT_AN_IMAGE),
        (
            {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"},
            NotScoredReason.UNSUPPORTED_PIXELS,
        ),
        ({"rows": 300, "columns": 200}, NotScoredReason.NOT_AN_IMAGE),  # a thumbnail
    ],
)
def test_secondary_capture_is_judged_by_what_it_holds(
    tags: dict[str, object], rule: NotScoredReason | None
) -> None:
    facts = classify(_film(**tags))
    assert facts.rule == rule, facts.rule_detail


def test_partial_view_and_top_level_view_modifier_are_kept_out_with_the_reason() -> None:
    tile = mg_dataset("L", "CC", PartialView="YES")
    assert classify(tile).rule == NotScoredReason.PARTIAL_VIEW
    rolled = mg_dataset("R", "MLO")
    modifier = Dataset()
    modifier.CodeValue, modifier.CodingSchemeDesignator = "399074003", "SCT"
    modifier.CodeMeaning = "Rolled Lateral"
    rolled.ViewModifierCodeSequence = [modifier]
    facts = classify(rolled)
    assert facts.rule == NotScoredReason.NON_SCREENING_VIEW and "Rolled" in facts.rule_detail


def test_repeats_pick_the_latest_acquisition_and_say_which_tag_decided() -> None:
    first = mg_dataset("L", "CC", AcquisitionDateTime="20261201101500", InstanceNumber=1)
    later = mg_dataset("L", "CC", AcquisitionDateTime="20261201102000", InstanceNumber=2)
    resolution = resolve([_image(later), _image(first)])
    assert resolution.slots[LCC] == str(later.SOPInstanceUID)
    assert resolution.roles[str(first.SOPInstanceUID)].role == ObjectRole.REPEAT
    assert "AcquisitionDateTime" in resolution.roles[str(later.SOPInstanceUID)].detail
    # no times: InstanceNumber decides; ContentDate+ContentTime when that is all there is
    a, b = mg_dataset("L", "CC", InstanceNumber=3), mg_dataset("L", "CC", InstanceNumber=7)
    assert resolve([_image(a), _image(b)]).slots[LCC] == str(b.SOPInstanceUID)
    c = mg_dataset("L", "CC", ContentDate="20261201", ContentTime="090000")
    d = mg_dataset("L", "CC", ContentDate="20261201", ContentTime="091500.5")
    chosen = resolve([_image(d), _image(c)])
    assert chosen.slots[LCC] == str(d.SOPInstanceUID)
    assert "ContentDate+ContentTime" in chosen.roles[str(d.SOPInstanceUID)].detail


def test_ffdm_wins_over_synthesized_2d_which_is_accepted_alone_and_said_so() -> None:
    ffdm = mg_dataset("L", "CC")
    synth = mg_dataset("L", "CC", ImageType=["DERIVED", "PRIMARY", "GENERATED_2D"])
    both = resolve([_image(synth), _image(ffdm)])
    assert both.slots[LCC] == str(ffdm.SOPInstanceUID)
    assert both.roles[str(synth.SOPInstanceUID)].role == ObjectRole.SYNTHESIZED_2D
    text_only = mg_dataset("L", "CC", SeriesDescription="L CC C-View")
    alone = resolve([_image(text_only)])
    assert alone.slots[LCC] == str(text_only.SOPInstanceUID)
    assert any("synthesized 2D scored" in note for note in alone.notes)


def test_a_study_of_two_dates_scores_the_latest_and_files_the_other_as_prior() -> None:
    study = "1.2.3.4"
    old = [
        mg_dataset(lat, view, study_uid=study, AcquisitionDate="20241130")
        for lat, view in (("L", "CC"), ("L", "MLO"))
    ]
    new = [
        mg_dataset(lat, view, study_uid=study, AcquisitionDate="20261201")
        for lat, view in (("L", "CC"), ("L", "MLO"))
    ]
    resolution = resolve([_image(ds) for ds in [*old, *new]])
    assert resolution.slots[LCC] == str(new[0].SOPInstanceUID)
    assert resolution.roles[str(old[0].SOPInstanceUID)].role == ObjectRole.PRIOR
    assert "latest acquisition date" in resolution.roles[str(old[0].SOPInstanceUID)].detail


def test_implant_is_reported_and_identity_disagreement_found_without_naming_anyone() -> None:
    images = [
        mg_dataset(lat, view, BreastImplantPresent="YES")
        for lat, view in (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
    ]
    images[3].PatientName = "OTHER^WOMAN"
    resolution = resolve([_image(ds) for ds in images])
    assert len(resolution.notes) == 4 and "BreastImplantPresent" in resolution.notes[0]
    assert "PatientName" in resolution.identity_conflict
    assert "OTHER" not in resolution.identity_conflict
    spelled = [
        mg_dataset("L", "CC", PatientName="Doe^Jane"),
        mg_dataset("L", "MLO", PatientName="DOE^JANE "),
    ]
    assert resolve([_image(ds) for ds in spelled]).identity_conflict == ""


def test_decide_prior_one_breast_and_held() -> None:
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    kw = {"last_received_at": t0, "quiet_seconds": 1, "stable_seconds": 10}
    left = resolve([_facts("1", "L-CC"), _facts("2", "L-MLO")])
    assert decide(left, now=t0 + dt.timedelta(seconds=5), **kw) is None  # wait for the other
    one = decide(left, now=t0 + dt.timedelta(seconds=10), **kw)
    assert one is not None and one.state == ExamState.READY and "breast R" in one.reason
    three = resolve([_facts("1", "L-CC"), _facts("2", "L-MLO"), _facts("3", "R-CC")])
    partial = decide(three, now=t0 + dt.timedelta(seconds=10), **kw)
    assert partial is not None and partial.state == ExamState.PARTIAL  # R is not absent
    full = resolve([_facts(f"1.{i}", str(s)) for i, s in enumerate(SLOTS)])
    prior = decide(
        full, now=t0 + dt.timedelta(seconds=2), study_date="20251101", prior_after_days=30, **kw
    )
    assert prior is not None and prior.state == ExamState.PRIOR and "395 days" in prior.reason
    recent = decide(
        full, now=t0 + dt.timedelta(seconds=2), study_date="20261120", prior_after_days=30, **kw
    )
    assert recent is not None and recent.state == ExamState.READY
    full.identity_conflict = "the study's objects disagree on the patient: PatientID (2 values)"
    held = decide(full, now=t0 + dt.timedelta(seconds=2), **kw)
    assert held is not None and held.state == ExamState.HELD


def test_rejection_notes_and_companions_get_their_roles() -> None:
    from mammo_node.synth import habits

    views = [
        mg_dataset(lat, view, InstanceNumber=i)
        for i, (lat, view) in enumerate((("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")))
    ]
    repeat = habits.technical_repeat(views[0])
    note = habits.rejection_note([repeat])
    objects = [note, *views, repeat, *habits.companions(views)]
    resolution = resolve([_image(ds) for ds in objects])
    assert resolution.slots[LCC] == str(views[0].SOPInstanceUID)
    assert resolution.roles[str(repeat.SOPInstanceUID)].role == ObjectRole.REJECTED
    assert resolution.roles[str(note.SOPInstanceUID)].role == ObjectRole.REJECTION_NOTE
    kinds = {object_kind(ds) for ds in habits.companions(views)}
    assert kinds == {ObjectKind.COMPANION}


def test_other_vendor_habits_tomo_under_a_2d_class_s_view_and_equal_acquisition_times() -> None:
    proj = mg_dataset("L", "CC", ImageType=["ORIGINAL", "PRIMARY", "TOMO_PROJ"])
    assert classify(proj).rule == NotScoredReason.TOMOSYNTHESIS
    s_view = mg_dataset("L", "CC", SeriesDescription="L CC S-View")
    assert "S-View" in selection_facts(s_view)["synthesized_2d"]
    # two series acquired in the same second: ContentTime tells which is the later image
    a = mg_dataset(
        "R",
        "CC",
        AcquisitionDateTime="20261201100000",
        ContentDate="20261201",
        ContentTime="100001",
        InstanceNumber=1,
    )
    b = mg_dataset(
        "R",
        "CC",
        AcquisitionDateTime="20261201100000",
        ContentDate="20261201",
        ContentTime="100130",
        InstanceNumber=1,
    )
    resolution = resolve([_image(b), _image(a)])
    assert resolution.slots[Slot(Laterality.R, View.CC)] == str(b.SOPInstanceUID)
    assert "ContentDate+ContentTime" in resolution.roles[str(b.SOPInstanceUID)].detail
    # a name with and without its ideographic group is the same woman
    same = [
        mg_dataset("L", "CC", PatientName="YAMADA^HANAKO=山田^花子"),
        mg_dataset("L", "MLO", PatientName="Yamada^Hanako"),
    ]
    assert resolve([_image(ds) for ds in same]).identity_conflict == ""


def test_files_are_hashed_in_the_background_while_no_exam_is_scored(
    tmp_path: Path, synth_exams: list[object]
) -> None:
    """The grouping service's SHA-256 pass runs at the node's priority: on a node that scores
    it waits while an exam is being scored or has just become READY (the lower-priority
    scoring process would lose the CPU to it), not for a READY exam no worker takes, and
    hashes once none is; a node that only receives hashes whenever it is idle."""
    import shutil

    from sqlalchemy import select

    from mammo_node.config import Settings
    from mammo_node.db.models import Exam, Instance
    from mammo_node.db.session import Database, upgrade
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore
    from mammo_node.grouping.service import HASH_WAITS_FOR_READY_SECONDS, Grouper

    settings = Settings(
        data_dir=tmp_path / "node", min_free_disk_mb=0, quiet_seconds=0, prior_after_days=0
    )
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    store = InstanceStore(settings.storage_dir)
    ingestor = Ingestor(settings, db, store)
    for exam in synth_exams[:2]:
        for f in exam.files:  # type: ignore[attr-defined]
            temp = store.temp_path()
            shutil.copyfile(f, temp)
            ingestor.ingest_file(temp, source="dimse", calling_ae="MODALITY", peer_host="-")
    grouper = Grouper(settings, db, store, scores_here=True)
    while grouper.check_pending_pixels() or grouper.decide_exams():
        pass

    def unhashed() -> int:
        with db.read() as session:
            return len(session.scalars(select(Instance).where(Instance.sha256.is_(None))).all())

    assert unhashed() == 8
    with db.read() as session:
        assert {e.state for e in session.scalars(select(Exam))} == {"ready"}
    assert grouper.hash_new_files(idle_seconds=0) == 0, "a worker is about to claim them"
    with db.session() as session:
        for exam_row in session.scalars(select(Exam)):
            exam_row.state_changed_at -= dt.timedelta(seconds=HASH_WAITS_FOR_READY_SECONDS + 1)
        session.scalars(select(Exam)).first().state = "scoring"  # type: ignore[union-attr]
    assert grouper.hash_new_files(idle_seconds=0) == 0
    assert unhashed() == 8, "nothing hashed while an exam is scored"
    elsewhere = Grouper(settings, db, store)  # a node that only receives: its exams are
    assert elsewhere.hash_new_files(idle_seconds=0, limit=1) == 1  # scored on other machines
    with db.session() as session:  # READY for long, unclaimed (no model): hashing goes on
        for exam_row in session.scalars(select(Exam).where(Exam.state == "scoring")):
            exam_row.state = "ready"
    assert grouper.hash_new_files(idle_seconds=0, limit=1) == 1
    with db.session() as session:
        for exam_row in session.scalars(select(Exam)):
            exam_row.state = "scored"
    while grouper.hash_new_files(idle_seconds=0):
        pass
    assert unhashed() == 0
    db.dispose()
