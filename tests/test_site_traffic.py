"""Real screening-site traffic, end to end: every object filed with its role, the right image
scored, the right woman named. dcmtk storescu and pynetdicom send to a running node on SQLite
and PostgreSQL; the outcome is read back from `mammo-node exams show --json` and, where
scoring matters, from the outputs a listening C-STORE SCP receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE
from sqlalchemy import func, select

from mammo_node.db.models import AuditEvent, Instance, InstanceConflict, Patient
from mammo_node.delivery.destinations import add_destination
from mammo_node.exams import exam_detail
from mammo_node.observe import audit
from mammo_node.receive.syntaxes import JPEG_XL_LOSSLESS
from mammo_node.status import Status
from mammo_node.synth import SynthOptions, generate_exams
from mammo_node.synth import habits as site
from tests.helpers.tools import dcmtk, free_port, storescu, wait_for

# --- helpers -------------------------------------------------------------------------------


def synth_views(seed: int, **options: Any) -> list[Dataset]:
    """The four views of one small synthetic exam, dated today (not a prior)."""
    exam = next(
        iter(
            generate_exams(
                SynthOptions(rows=192, columns=160, exams=1, seed=seed, repeat_patient_fraction=0)
            )
        )
    )
    views = list(exam.datasets.values())
    site.recent(views)
    for ds in views:
        for keyword, value in options.items():
            setattr(ds, keyword, value)
    return views


def write_all(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(node: Any, datasets: list[Dataset], folder: Path, *flags: str, aet: str = "MODALITY"):
    run = storescu(node.scp.port, write_all(datasets, folder), *flags, aet=aet)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def pn_send(node: Any, datasets: list[Dataset], *, aet: str = "PYNETDICOM") -> list[int]:
    ae = AE(ae_title=aet)
    for ds in datasets:
        ae.add_requested_context(str(ds.SOPClassUID), [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def exams_show(node: Any, study_uid: str) -> dict[str, Any]:
    """`mammo-node exams show UID --json` against the node's own database."""
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "mammo-node"),
            "exams",
            "show",
            study_uid,
            "--json",
            "--data-dir",
            str(node.settings.data_dir),
            "--db-url",
            node.settings.database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def state(node: Any, study_uid: str) -> str:
    try:
        return str(exam_detail(node.db, study_uid)["state"])
    except Exception:
        return ""


def roles(detail: dict[str, Any]) -> dict[str, str]:
    return {o["sop_instance_uid"]: o["role"] for o in detail["instances"] if o["role"] != "output"}


class ListeningStoreSCP:
    """dcmtk storescp as the reading room's PACS: every received object lands in a folder."""

    def __init__(self, folder: Path, ae_title: str = "PACS") -> None:
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "-aet", ae_title, "-od", str(folder), "+xa", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=30, interval=0.2)

    def _answers(self) -> bool:
        run = subprocess.run(
            [dcmtk("echoscu"), "-aec", "PACS", "127.0.0.1", str(self.port)], capture_output=True
        )
        return run.returncode == 0

    def received(self) -> list[Dataset]:
        return [dcmread(path) for path in sorted(self.folder.iterdir()) if path.is_file()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- every object filed, the right image scored ----------------------------------------------


def test_a_study_with_its_companions_repeats_and_notes_is_filed_whole_and_scored_right(
    node_factory: Any, db_url: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    pacs = ListeningStoreSCP(tmp_path / "pacs")
    try:
        node = node_factory(db_url, score=True, model_bundle=tiny_bundle, stable_seconds=2.0)
        add_destination(node.db, "pacs", ae_title="PACS", host="127.0.0.1", port=pacs.port)
        views = synth_views(3, PatientName="SITE^WOMAN", PatientID="SITE-3")
        lcc = next(ds for ds in views if str(ds.ImageLaterality) + str(ds.ViewPosition) == "LCC")
        objects = site.add_habits(
            views, ["repeat", "companions", "synthetic-2d", "rejection", "prior-merged"]
        )
        send(node, objects, tmp_path / "study")
        study = str(views[0].StudyInstanceUID)
        wait_for(lambda: state(node, study) == "scored", timeout=90)
        detail = exams_show(node, study)
        # what the destination takes (its default kinds), not every object the node stored
        outputs = {d["sop_instance_uid"] for d in detail["result"]["deliveries"]}
        wait_for(lambda: len(pacs.received()) >= len(outputs), timeout=60)
        received = pacs.received()
    finally:
        pacs.stop()

    got = roles(detail)
    assert len(got) == len(objects)  # every object filed, none refused
    counts = Counter(got.values())
    assert counts == {
        "scored": 4,
        "repeat": 1,
        "synthesized_2d": 4,
        "rejected": 1,
        "rejection_note": 1,
        "prior": 4,
        "companion": 5,
    }
    repeat = objects[len(views)]  # the later exposure of L-CC wins over the first
    assert detail["slots"]["L-CC"] == str(repeat.SOPInstanceUID)
    assert got[str(lcc.SOPInstanceUID)] == "repeat"
    by_uid = {o["sop_instance_uid"]: o for o in detail["instances"]}
    assert "AcquisitionDateTime" in by_uid[str(repeat.SOPInstanceUID)]["detail"]
    rejected = next(u for u, r in got.items() if r == "rejected")
    assert "113001" in by_uid[rejected]["detail"]
    # the result is computed from exactly the four selected images...
    result = detail["result"]
    assert sorted(result["images"]) == sorted(detail["slots"].values())
    assert result["selection"]["slots"] == detail["slots"]
    # ...and every output the PACS received names this exam's woman and references them
    assert {str(ds.SOPInstanceUID) for ds in received} == outputs
    assert {(str(ds.PatientName), str(ds.PatientID)) for ds in received} == {
        ("SITE^WOMAN", "SITE-3")
    }


def test_private_and_unlisted_storage_classes_are_accepted_and_filed(
    node_factory: Any, db_url: str
) -> None:
    node = node_factory(db_url)
    views = synth_views(4)
    private = site.dose_report(views[0])
    private.SOPClassUID = "1.2.840.113619.4.27"  # a vendor's private raw-data class
    private.file_meta.MediaStorageSOPClassUID = private.SOPClassUID
    waveform = site.dose_report(views[0])
    waveform.SOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG waveform
    waveform.file_meta.MediaStorageSOPClassUID = waveform.SOPClassUID
    assert pn_send(node, [*views, private, waveform]) == [0] * 6
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "ready", timeout=30)
    detail = exam_detail(node.db, study)
    got = roles(detail)
    assert got[str(private.SOPInstanceUID)] == "companion"
    assert got[str(waveform.SOPInstanceUID)] == "companion"
    assert Counter(got.values())["scored"] == 4


# --- transfer syntaxes -----------------------------------------------------------------------


def _accepted(node: Any, *contexts: list[str]) -> list[str | None]:
    """Propose one MG context per syntax list; what the node accepted for each (None: refused).
    pynetdicom numbers requested contexts 1, 3, 5... in the order they were added."""
    ae = AE()
    for syntaxes in contexts:
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.2", syntaxes)
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="MAMMO_NODE")
    assert assoc.is_established
    try:
        by_id = {cx.context_id: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        return [by_id.get(2 * i + 1) for i in range(len(contexts))]
    finally:
        assoc.release()


def test_pynetdicom_mixed_proposals_get_lossless_first_and_never_an_unreadable_syntax(
    node_factory: Any,
) -> None:
    node = node_factory()
    assert _accepted(
        node,
        [JPEGBaseline8Bit, JPEGLosslessSV1, ExplicitVRLittleEndian],
        [JPEGBaseline8Bit, ImplicitVRLittleEndian],
        [JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        [JPEGBaseline8Bit],
        [JPEG_XL_LOSSLESS],
        [JPEG2000MCLossless],
        [JPEG_XL_LOSSLESS, JPEG2000Lossless],
        [DeflatedExplicitVRLittleEndian],
    ) == [
        JPEGLosslessSV1,  # lossless compressed before uncompressed and lossy
        ImplicitVRLittleEndian,  # anything lossless before lossy
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,  # lossy only when nothing lossless was proposed
        None,  # JPEG XL: no installed decoder reads it; refused so the sender falls back
        None,  # JPEG 2000 Part 2 multi-component: the same
        JPEG2000Lossless,
        None,  # deflated: the receive path cannot check a deflated stream's lengths
    ]


def test_dcmtk_mixed_proposals_keep_lossless_files_as_sent(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    node = node_factory(db_url)
    views = synth_views(5)
    site.with_syntax(views[0], JPEG2000Lossless)
    site.with_syntax(views[1], RLELossless)
    config = tmp_path / "storescu.cfg"
    lines = ["[[TransferSyntaxes]]"]
    proposals = {
        "J2K": ["JPEG2000", "JPEG2000LosslessOnly", "LittleEndianExplicit"],
        "RLE": ["JPEG2000", "RLELossless", "LittleEndianExplicit", "LittleEndianImplicit"],
        "JPEG": [
            "JPEGBaseline",
            "JPEGLossless:Non-hierarchical-1stOrderPrediction",
            "LittleEndianExplicit",
        ],
        "PLAIN": ["JPEGBaseline", "LittleEndianExplicit", "LittleEndianImplicit"],
    }
    for name, syntaxes in proposals.items():
        lines.append(f"[{name}TS]")
        lines += [f"TransferSyntax{i + 1} = {ts}" for i, ts in enumerate(syntaxes)]
    lines.append("[[PresentationContexts]]")
    for name in proposals:
        lines += [
            f"[{name}CX]",
            f"PresentationContext1 = DigitalMammographyXRayImageStorageForPresentation\\{name}TS",
        ]
    lines.append("[[Profiles]]")
    for name in proposals:
        lines += [f"[{name}]", f"PresentationContexts = {name}CX"]
    config.write_text("\n".join(lines) + "\n")
    # each sender proposes lossy first: the node picks the lossless syntax it reads
    files = write_all(views, tmp_path / "views")
    # a modality that compresses JPEG Lossless itself (dcmtk's encoder, process 14 SV1)
    jpeg = tmp_path / "views" / "jpeg-lossless.dcm"
    run = subprocess.run([dcmtk("dcmcjpeg"), "+e1", str(files[2]), str(jpeg)], capture_output=True)
    assert run.returncode == 0, run.stderr
    files[2] = jpeg
    for path, profile in zip(files, ["J2K", "RLE", "JPEG", "PLAIN"], strict=True):
        run = storescu(node.scp.port, [path], "-xf", str(config), profile)
        assert run.returncode == 0, run.stdout + run.stderr
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "ready", timeout=30)
    detail = exams_show(node, study)
    syntax = {o["sop_instance_uid"]: o["transfer_syntax_uid"] for o in detail["instances"]}
    assert syntax[str(views[0].SOPInstanceUID)] == JPEG2000Lossless
    assert syntax[str(views[1].SOPInstanceUID)] == RLELossless
    assert syntax[str(views[2].SOPInstanceUID)] == JPEGLosslessSV1
    # offered JPEG Baseline first, then uncompressed: the node takes the lossless one
    assert syntax[str(views[3].SOPInstanceUID)] == ExplicitVRLittleEndian
    assert all(o["pixel_check"] == "ok" for o in detail["instances"])


# --- rejection notes, whenever they arrive ----------------------------------------------------


def test_rejection_note_withdraws_an_image_before_or_after_it_arrives(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    node = node_factory(db_url, quiet_seconds=0.5)
    views = synth_views(6)
    rmlo = next(ds for ds in views if str(ds.ImageLaterality) + str(ds.ViewPosition) == "RMLO")
    repeat = site.technical_repeat(rmlo)
    send(node, [*views, repeat], tmp_path / "a")
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "ready", timeout=30)
    assert exam_detail(node.db, study)["slots"]["R-MLO"] == str(repeat.SOPInstanceUID)
    revision = exam_detail(node.db, study)["revision"]

    # the technologist withdraws the repeat after the exam was complete: re-opened, reselected
    send(
        node,
        [site.rejection_note([repeat], "113037", "Rejected for Patient Safety Reasons")],
        tmp_path / "b",
    )
    wait_for(lambda: exam_detail(node.db, study)["revision"] > revision, timeout=30)
    wait_for(lambda: state(node, study) == "ready", timeout=30)
    detail = exams_show(node, study)
    assert detail["slots"]["R-MLO"] == str(rmlo.SOPInstanceUID)
    assert roles(detail)[str(repeat.SOPInstanceUID)] == "rejected"
    assert any("rejection note" in e["reason"] for e in detail["events"])

    # a note that arrives before the image it withdraws (another association, other order)
    other = synth_views(7)
    wrong = site.technical_repeat(other[0])
    send(
        node,
        [site.rejection_note([wrong], "113038", "Incorrect Modality Worklist Entry")],
        tmp_path / "c",
    )
    send(node, [*other, wrong], tmp_path / "d")
    study2 = str(other[0].StudyInstanceUID)
    wait_for(lambda: state(node, study2) == "ready", timeout=30)
    detail2 = exams_show(node, study2)
    assert roles(detail2)[str(wrong.SOPInstanceUID)] == "rejected"
    assert str(other[0].SOPInstanceUID) in detail2["slots"].values()


# --- exams that are not four clean views -----------------------------------------------------


def test_one_breast_exam_is_scored_and_names_the_missing_breast(
    node_factory: Any, db_url: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    node = node_factory(db_url, score=True, model_bundle=tiny_bundle, stable_seconds=1.5)
    views = [ds for ds in synth_views(8) if str(ds.ImageLaterality) == "L"]
    send(node, views, tmp_path / "left")
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "scored", timeout=60)
    detail = exams_show(node, study)
    result = detail["result"]
    assert result["missing_breasts"] == ["R"]
    assert list(result["breast_scores"]) == ["L"]
    assert result["exam_score"] == pytest.approx(result["breast_scores"]["L"])
    assert "no image of breast R" in detail["reason"]


def test_a_prior_is_filed_not_scored_until_asked(
    node_factory: Any, db_url: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    node = node_factory(
        db_url, score=True, model_bundle=tiny_bundle, prior_after_days=30, quiet_seconds=0.5
    )
    views = site.as_prior_study(synth_views(9), days_before=400)
    send(node, views, tmp_path / "prior")
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "prior", timeout=30)
    detail = exams_show(node, study)
    assert detail["result"] is None and "400 days old" in detail["reason"]
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "mammo-node"),
            "exams",
            "rescore",
            study,
            "--data-dir",
            str(node.settings.data_dir),
            "--db-url",
            node.settings.database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    wait_for(lambda: state(node, study) == "scored", timeout=60)


# --- patient identity ------------------------------------------------------------------------


def test_women_without_patient_id_are_never_merged_and_each_exam_names_its_own(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    node = node_factory(db_url)
    first = synth_views(10, PatientID="", PatientName="FIRST^ANNA", PatientBirthDate="19600101")
    second = synth_views(11, PatientID="", PatientName="SECOND^BEA", PatientBirthDate="19700202")
    # the same PatientID, but the later study spells the name differently: no rename
    third = synth_views(12, PatientID="SITE-7", PatientName="THIRD^CARA")
    fourth = synth_views(13, PatientID="SITE-7", PatientName="THIRD^CARA MARIA")
    for i, views in enumerate((first, second, third, fourth)):
        send(node, views, tmp_path / f"w{i}")
    studies = [str(v[0].StudyInstanceUID) for v in (first, second, third, fourth)]
    for study in studies:
        wait_for(lambda s=study: state(node, s) == "ready", timeout=30)
    shown = [exams_show(node, s)["patient"] for s in studies]
    assert [p["name"] for p in shown] == [  # PatientInfo shows PN components spaced
        "FIRST ANNA",
        "SECOND BEA",
        "THIRD CARA",
        "THIRD CARA MARIA",
    ]
    assert shown[0]["birth_date"] == "19600101" and shown[1]["birth_date"] == "19700202"
    with node.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Patient)) == 3


def test_a_study_whose_images_disagree_on_the_patient_is_held_and_audited(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    node = node_factory(db_url)
    views = synth_views(14)
    views[3].PatientID = "SOMEONE-ELSE"
    send(node, views, tmp_path / "mixed")
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "held", timeout=30)
    detail = exams_show(node, study)
    assert "PatientID" in detail["identity_conflict"]
    assert "SOMEONE-ELSE" not in detail["reason"]  # no patient data in reasons
    with node.db.read() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.target == study)).all()
    assert audit.EXAM_HELD in actions


# --- same UID, other bytes -------------------------------------------------------------------


def _changed(ds: Dataset) -> Dataset:
    other = site.technical_repeat(ds)  # other pixels...
    other.SOPInstanceUID = ds.SOPInstanceUID  # ...under the acknowledged UID
    other.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return other


@pytest.mark.parametrize("policy", ["same-source", "never", "always"])
def test_overwrite_policy(node_factory: Any, db_url: str, policy: str, tmp_path: Path) -> None:
    node = node_factory(db_url, overwrite_policy=policy, quiet_seconds=0.5)
    views = synth_views(15)
    assert pn_send(node, views, aet="MODALITY_A") == [0] * 4
    study = str(views[0].StudyInstanceUID)
    wait_for(lambda: state(node, study) == "ready", timeout=30)
    before = exam_detail(node.db, study)

    own = pn_send(node, [_changed(views[0])], aet="MODALITY_A")
    foreign = pn_send(node, [_changed(views[1])], aet="OTHER_AE")
    wait_for(lambda: state(node, study) == "ready", timeout=30)
    detail = exams_show(node, study)
    refused = Status.DUPLICATE_SOP_INSTANCE
    expected = {
        "same-source": ([0], [refused]),
        "never": ([refused], [refused]),
        "always": ([0], [0]),
    }[policy]
    assert (own, foreign) == expected
    conflicts = {c["sop_instance_uid"]: c for c in detail["conflicts"]}
    for ds, status in ((views[0], own[0]), (views[1], foreign[0])):
        uid = str(ds.SOPInstanceUID)
        if status == 0:
            assert uid not in conflicts
        else:  # first bytes kept, newcomer kept aside and listed, both files on disk
            assert conflicts[uid]["role"] == "conflict"
            assert policy in conflicts[uid]["rule"]
        with node.db.read() as session:
            rel_path = session.scalars(
                select(Instance.rel_path).where(Instance.sop_instance_uid == uid)
            ).one()
        kept = dcmread(node.store.path(rel_path)).PixelData
        assert (kept == ds.PixelData) == (status != 0)  # replaced only where allowed
    replaced = sum(1 for s in (own[0], foreign[0]) if s == 0)
    assert detail["revision"] == before["revision"] + replaced
    with node.db.read() as session:
        kept_aside = session.scalars(select(InstanceConflict.rel_path)).all()
        actions = Counter(session.scalars(select(AuditEvent.action)).all())
    assert len(kept_aside) == 2 - replaced
    assert all(node.store.path(p).is_file() for p in kept_aside)
    assert actions[audit.INSTANCE_CONFLICT] == 2 - replaced


def test_storescu_sees_a_refused_replacement_as_a_failure(
    node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory(overwrite_policy="never")
    views = synth_views(16)
    send(node, views, tmp_path / "first")
    run = storescu(node.scp.port, write_all([_changed(views[0])], tmp_path / "again"), "-d")
    log = run.stdout + run.stderr
    # 0x0111 Duplicate SOP Instance (PS3.7 C.4), with the reason in the Error Comment
    assert "Status: 0x111" in log or "0x0111" in log
    assert "already stored with other bytes" in log


def test_synth_cli_writes_site_habits_that_storescu_sends_and_the_node_files(
    node_factory: Any, db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "synth"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "mammo-node"),
            "synth",
            str(out),
            "--exams",
            "2",
            "--rows",
            "128",
            "--columns",
            "104",
            "--recent",
            "--habit",
            "empty-patient-id",
            "--habit",
            "companions",
            "--habit",
            "repeat",
            "--habit",
            "rle",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    node = node_factory(db_url, prior_after_days=30)
    files = sorted(out.glob("*/*.dcm"))
    assert len(files) == 2 * (4 + 1 + 5)
    sent = storescu(node.scp.port, files, "-xr")  # propose RLE, then uncompressed
    assert sent.returncode == 0, sent.stderr
    studies = sorted(p.name for p in out.iterdir() if p.is_dir())
    for study in studies:
        wait_for(lambda s=study: state(node, s) == "ready", timeout=30)
    shown = [exams_show(node, s) for s in studies]
    for detail in shown:
        assert Counter(roles(detail).values()) == {
            "scored": 4,
            "repeat": 1,
            "companion": 5,
        }
        images = [o for o in detail["instances"] if o["kind"] == "image"]
        assert {o["transfer_syntax_uid"] for o in images} == {RLELossless}
    assert [d["patient"]["id"] for d in shown] == ["", ""]
    with node.db.read() as session:  # two women without an ID: two patients
        assert session.scalar(select(func.count()).select_from(Patient)) == 2


def test_orthanc_forwards_a_whole_study_with_its_companions(
    node_factory: Any, orthanc: Any
) -> None:
    """The issue's Orthanc job that failed with HTTP 500 ("Cannot transcode ... to one of
    [ ]") when the node refused the dose report's SOP class: now every object arrives."""
    node = node_factory()
    views = synth_views(17)
    objects = site.add_habits(views, ["companions", "rle"])

    def call(method: str, path: str, body: bytes) -> Any:
        request = urllib.request.Request(orthanc.url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")

    for ds in objects:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        call("POST", "/instances", buffer.getvalue())
    modality = {"AET": "MAMMO_NODE", "Host": "127.0.0.1", "Port": node.scp.port}
    call("PUT", "/modalities/node", json.dumps(modality).encode())
    study = str(views[0].StudyInstanceUID)
    orthanc_id = call("POST", "/tools/lookup", study.encode())[0]["ID"]
    call("POST", "/modalities/node/store", json.dumps({"Resources": [orthanc_id]}).encode())
    wait_for(lambda: state(node, study) == "ready", timeout=60)
    detail = exams_show(node, study)
    assert Counter(roles(detail).values()) == {"scored": 4, "companion": 5}
