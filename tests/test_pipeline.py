"""Close the loop: a modality sends an exam, the node scores it and the PACS (a real Orthanc)
receives the SR, SC and SEG objects; they validate and read back with the stored scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from mammo_node.delivery.destinations import add_destination
from mammo_node.exams import exam_detail
from mammo_node.writers import read_report
from tests.helpers.tools import dciodvfy_errors, storescu, wait_for

IDENTITY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
)


def scored(node: Any, study: str) -> dict[str, Any]:
    detail = exam_detail(node.db, study)
    return detail if detail["state"] == "scored" else {}


def delivered(node: Any, study: str) -> dict[str, Any]:
    detail = exam_detail(node.db, study)
    result = detail.get("result")
    if not result or not result["deliveries"]:
        return {}
    return detail if all(d["state"] == "delivered" for d in result["deliveries"]) else {}


def test_exam_is_scored_and_results_arrive_in_orthanc(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any], orthanc: Any, tmp_path: Path
) -> None:
    node = node_factory(score=True, model_bundle=tiny_bundle)
    add_destination(
        node.db,
        "pacs",
        ae_title="ORTHANC",
        host="127.0.0.1",
        port=orthanc.dicom_port,
        outputs="tid1500,sc,seg,cad-sr,gsps",
    )
    exam = synth_exams[0]
    assert storescu(node.scp.port, exam.files).returncode == 0
    detail = wait_for(lambda: delivered(node, exam.study_uid), timeout=120, interval=0.3)
    result = detail["result"]
    assert result["model"]["name"] == "mammo-node-test-random"
    assert set(result["images"]) == {str(ds.SOPInstanceUID) for ds in exam.datasets.values()}
    kinds = sorted(o["kind"] for o in result["outputs"])
    assert kinds == ["cad_sr", "gsps"] + ["sc"] * 4 + ["seg"] * 4 + ["sr"] + ["sr_view"] * 4
    # one delivery per output to the one destination (it asked for every kind), each once
    assert len(result["deliveries"]) == 15
    assert all(d["attempts"] == 1 for d in result["deliveries"])

    in_pacs = orthanc.instances_of_study(exam.study_uid)
    by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in in_pacs}
    for output in result["outputs"]:
        assert output["sop_instance_uid"] in by_uid, f"{output['kind']} missing in Orthanc"
        raw = orthanc.get_bytes(f"/instances/{by_uid[output['sop_instance_uid']]}/file")
        path = tmp_path / f"{output['kind']}-{output['sop_instance_uid']}.dcm"
        path.write_bytes(raw)
        assert dciodvfy_errors(path) == [], f"{output['kind']} does not validate"
        stored = dcmread(path, stop_before_pixels=True)
        source = next(iter(exam.datasets.values()))
        for keyword in IDENTITY:  # the source's full patient / study identity
            assert stored.get(keyword) == source.get(keyword), f"{output['kind']}: {keyword}"

    # the exam report read back with highdicom carries the scores the database holds
    sr_raw = orthanc.get_bytes(f"/instances/{by_uid[result['sr_sop_instance_uid']]}/file")
    sr = hd.sr.srread(DicomBytesIO(sr_raw))
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    reading = read_report(dcmread(DicomBytesIO(sr_raw)))
    assert reading.scores["exam score"] == pytest.approx(result["exam_score"], abs=1e-3)
    for laterality, score in result["breast_scores"].items():
        assert reading.scores[f"breast {laterality} score"] == pytest.approx(score, abs=1e-3)
    for image in result["images"].values():
        expected = image["ensemble"]
        assert reading.scores[f"{image['slot']} image score"] == pytest.approx(expected, abs=1e-3)


def test_results_wait_for_a_pacs_that_is_down_and_arrive_once(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any], orthanc: Any
) -> None:
    node = node_factory(
        score=True, model_bundle=tiny_bundle, outbox_backoff_base=0.3, outbox_backoff_max=1.0
    )
    add_destination(node.db, "pacs", ae_title="ORTHANC", host="127.0.0.1", port=orthanc.dicom_port)
    orthanc.stop()  # the PACS goes down before the results are due
    exam = synth_exams[1]
    assert storescu(node.scp.port, exam.files).returncode == 0

    def failed_twice() -> bool:
        result = exam_detail(node.db, exam.study_uid).get("result")
        return bool(
            result
            and result["deliveries"]
            and all(d["attempts"] >= 2 for d in result["deliveries"])
        )

    wait_for(failed_twice, timeout=120, interval=0.3)
    pending = exam_detail(node.db, exam.study_uid)["result"]["deliveries"]
    assert {d["state"] for d in pending} == {"pending"}
    assert "cannot connect" in pending[0]["last_error"]

    orthanc.start()  # back up, same storage
    detail = wait_for(lambda: delivered(node, exam.study_uid), timeout=60, interval=0.3)
    outputs = {  # a destination gets today's set by default: TID 1500, SC, SEG
        o["sop_instance_uid"]
        for o in detail["result"]["outputs"]
        if o["kind"] in ("sr", "sr_view", "sc", "seg")
    }
    in_pacs = [
        i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances_of_study(exam.study_uid)
    ]
    generated = [uid for uid in in_pacs if uid in outputs]
    assert sorted(generated) == sorted(outputs), "every output once, none twice"


def test_a_rejected_association_is_a_configuration_error_reported_once(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any], orthanc: Any
) -> None:
    node = node_factory(score=True, model_bundle=tiny_bundle, outbox_backoff_base=0.2)
    add_destination(node.db, "pacs", ae_title="WRONG_AE", host="127.0.0.1", port=orthanc.dicom_port)
    exam = synth_exams[2]
    assert storescu(node.scp.port, exam.files).returncode == 0
    wait_for(lambda: scored(node, exam.study_uid), timeout=120, interval=0.3)

    from mammo_node.delivery.destinations import list_destinations

    (destination,) = wait_for(
        lambda: [d for d in list_destinations(node.db) if d.config_error], timeout=30
    )
    assert "rejected" in destination.config_error
    import time

    time.sleep(2)  # no retry loop: nothing is attempted while the destination is paused
    deliveries = exam_detail(node.db, exam.study_uid)["result"]["deliveries"]
    assert {d["attempts"] for d in deliveries} == {0}
    # the operator fixes the AE title; the destination is retried and delivers
    add_destination(node.db, "pacs", ae_title="ORTHANC", host="127.0.0.1", port=orthanc.dicom_port)
    wait_for(lambda: delivered(node, exam.study_uid), timeout=60, interval=0.3)


def test_sigkill_mid_scoring_scores_and_sends_once_after_restart(
    node_process: Any, synth_exams: list[Any], orthanc: Any, tmp_path: Path
) -> None:
    import torch

    from mammo_node.ml.bundle import BundleManifest, save_bundle
    from mammo_node.ml.models import build_model
    from mammo_node.ml.preprocess import PreprocessSettings

    torch.manual_seed(1)
    model = build_model(arch="resnet18")
    bundle = tmp_path / "bundle"  # a larger input than tiny_bundle: scoring takes seconds
    save_bundle(
        bundle,
        holistic=model,
        attention=model,
        manifest=BundleManifest(
            name="mammo-node-test-random",
            version="0.0.2",
            architecture="resnet18",
            preprocess=PreprocessSettings(input_size=448, roi_size=256, roi_scale=1.5),
            is_demo=True,
        ),
    )
    node = node_process(tmp_path / "data", MAMMO_MODEL_BUNDLE=str(bundle))
    node.cli("db", "upgrade")
    node.cli(
        "destinations",
        "add",
        "pacs",
        "--ae-title",
        "ORTHANC",
        "--host",
        "127.0.0.1",
        "--port",
        str(orthanc.dicom_port),
    )
    node.start()
    exam = synth_exams[0]
    assert storescu(node.port, exam.files).returncode == 0

    def state() -> str:
        return str(json.loads(node.cli("exams", "show", exam.study_uid, "--json").stdout)["state"])

    wait_for(lambda: state() == "scoring", timeout=120, interval=0.02)
    node.kill()
    node.start()
    detail = wait_for(
        lambda: (
            (d := json.loads(node.cli("exams", "show", exam.study_uid, "--json").stdout))["state"]
            == "scored"
            and d["result"]["deliveries"]
            and all(x["state"] == "delivered" for x in d["result"]["deliveries"])
            and d
        ),
        timeout=180,
        interval=0.5,
    )
    result = detail["result"]
    assert len(result["deliveries"]) == 13 and all(d["attempts"] == 1 for d in result["deliveries"])
    assert result["previous_result_id"] is None, "one result: the killed run left none"
    outputs = {  # the default destination outputs: TID 1500, SC, SEG
        o["sop_instance_uid"]
        for o in result["outputs"]
        if o["kind"] in ("sr", "sr_view", "sc", "seg")
    }
    in_pacs = [
        i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances_of_study(exam.study_uid)
    ]
    assert sorted(uid for uid in in_pacs if uid in outputs) == sorted(outputs)
    assert len(in_pacs) == 13, "only the outputs reached the PACS, each once"
    assert any("claim released" in e["reason"] for e in detail["events"])
    assert node.stop() == 0
