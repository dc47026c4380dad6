"""Each destination gets the result objects it asked for: a breast workstation added with
``--outputs cad-sr,gsps`` receives exactly one Mammography CAD SR and one GSPS per exam."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from mammo_node.delivery.destinations import add_destination
from mammo_node.exams import exam_detail
from tests.helpers.tools import dcmtk, free_port, storescu, wait_for


@pytest.fixture
def workstation(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A listening dcmtk storescp (AE WS) that writes what it receives into a folder."""
    folder = tmp_path / "ws"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "WS", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    [dcmtk("echoscu"), "-aec", "WS", "127.0.0.1", str(port)], capture_output=True
                ).returncode
                == 0
            ),
            timeout=20,
        )
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _all_delivered(node: Any, study: str) -> dict[str, Any]:
    detail = exam_detail(node.db, study)
    result = detail.get("result")
    if not result or not result["deliveries"]:
        return {}
    return detail if all(d["state"] == "delivered" for d in result["deliveries"]) else {}


def test_a_cad_workstation_gets_one_cad_sr_and_one_gsps_and_nothing_else(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any], workstation: tuple[int, Path]
) -> None:
    port, folder = workstation
    node = node_factory(score=True, model_bundle=tiny_bundle)
    add_destination(
        node.db, "mammo-ws", ae_title="WS", host="127.0.0.1", port=port, outputs="cad-sr,gsps"
    )
    exam = synth_exams[0]
    assert storescu(node.scp.port, exam.files).returncode == 0
    detail = wait_for(lambda: _all_delivered(node, exam.study_uid), timeout=120, interval=0.3)
    deliveries = detail["result"]["deliveries"]
    assert sorted(d["output"] for d in deliveries) == ["cad_sr", "gsps"]
    files = wait_for(lambda: sorted(p for p in folder.iterdir() if p.is_file()) or None)
    received = [pydicom.dcmread(p) for p in files]
    assert sorted(ds.SOPClassUID for ds in received) == [
        "1.2.840.10008.5.1.4.1.1.11.1",  # GSPS
        "1.2.840.10008.5.1.4.1.1.88.50",  # Mammography CAD SR
    ]
    views = {str(ds.SOPInstanceUID) for ds in exam.datasets.values()}
    for ds in received:
        assert ds.StudyInstanceUID == exam.study_uid
        refs = {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        assert views <= refs, "covers the four views"
    (cad,) = [ds for ds in received if ds.Modality == "SR"]
    findings = [
        i
        for i in cad.iterall()
        if i.keyword == "ConceptNameCodeSequence" and i.value[0].CodeValue == "111059"
    ]
    assert len(findings) == 4  # one Single Image Finding per view


def test_destinations_cli_outputs(node_process: Any) -> None:
    node = node_process()
    node.cli("db", "upgrade")
    node.cli(
        "destinations",
        "add",
        "ws",
        "--ae-title",
        "WS",
        "--host",
        "127.0.0.1",
        "--port",
        "1104",
        "--outputs",
        "cad-sr,gsps",
    )
    node.cli("destinations", "add", "pacs", "--ae-title", "PACS", "--host", "h", "--port", "104")
    rows = {d["name"]: d for d in json.loads(node.cli("destinations", "list", "--json").stdout)}
    assert rows["ws"]["outputs"] == ["cad-sr", "gsps"]
    assert rows["pacs"]["outputs"] == ["tid1500", "sc", "seg"]  # today's set by default
    node.cli("destinations", "set", "pacs", "--outputs", "tid1500,sc,cad-sr")
    rows = {d["name"]: d for d in json.loads(node.cli("destinations", "list", "--json").stdout)}
    assert rows["pacs"]["outputs"] == ["tid1500", "sc", "cad-sr"]
    bad = node.cli("destinations", "set", "pacs", "--outputs", "pdf", check=False)
    assert bad.returncode != 0 and "Unknown output kind 'pdf'" in bad.stderr
    table = node.cli("destinations", "list").stdout
    assert "outputs" in table and "cad-sr" in table


def test_migration_gives_existing_destinations_todays_outputs(tmp_path: Path) -> None:
    """A database made before 0004 keeps sending TID 1500, SC and SEG to its destinations."""
    import sqlalchemy as sa
    from alembic import command

    from mammo_node.db.session import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0003")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO destinations (name, ae_title, host, port, tls, enabled, send_all, "
                "created_at, config_error) VALUES ('pacs', 'PACS', 'h', 104, 0, 1, 1, "
                "'2026-01-01 00:00:00', '')"
            )
        )
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT outputs FROM destinations")).scalar() == (
            "tid1500,sc,seg"
        )
    engine.dispose()


def test_a_rescore_sends_a_rejection_note_for_the_old_images_to_the_same_destination(
    node_factory: Any, tiny_bundle: Path, synth_exams: list[Any], workstation: tuple[int, Path]
) -> None:
    from mammo_node.worker import rescore

    port, folder = workstation
    node = node_factory(score=True, model_bundle=tiny_bundle)
    add_destination(node.db, "ws", ae_title="WS", host="127.0.0.1", port=port, outputs="sc,gsps")
    exam = synth_exams[1]
    assert storescu(node.scp.port, exam.files).returncode == 0
    first = wait_for(lambda: _all_delivered(node, exam.study_uid), timeout=120, interval=0.3)
    old = {o["sop_instance_uid"] for o in first["result"]["outputs"] if o["kind"] in ("sc", "gsps")}
    assert len(old) == 5
    rescore(node.db, exam.study_uid)

    def second_delivered() -> dict[str, Any]:
        detail = _all_delivered(node, exam.study_uid)
        return detail if detail and detail["result"]["id"] != first["result"]["id"] else {}

    second = wait_for(second_delivered, timeout=120, interval=0.3)
    kinds = sorted(d["output"] for d in second["result"]["deliveries"])
    assert kinds == ["gsps", "kos"] + ["sc"] * 4
    (kos_uid,) = [
        d["sop_instance_uid"] for d in second["result"]["deliveries"] if d["output"] == "kos"
    ]
    path = wait_for(lambda: next((p for p in folder.iterdir() if kos_uid in p.name), None))
    kos = pydicom.dcmread(path)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113001"
    listed = {str(e.value) for e in kos.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert old <= listed  # the first result's SC and GSPS (and its SEG, though not sent here)


@pytest.fixture(scope="module")
def bundle_with_points(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random bundle with two operating points (thresholds far apart)."""
    import torch

    from mammo_node.domain import OperatingPoint
    from mammo_node.ml.bundle import BundleManifest, save_bundle
    from mammo_node.ml.models import build_model
    from mammo_node.ml.preprocess import PreprocessSettings

    torch.manual_seed(0)
    holistic = build_model(arch="resnet18")
    attention = build_model(arch="resnet18")
    attention.load_state_dict(holistic.state_dict())
    out = tmp_path_factory.mktemp("bundle") / "points"
    manifest = BundleManifest(
        name="mammo-node-test-points",
        version="0.0.1",
        architecture="resnet18",
        preprocess=PreprocessSettings(input_size=64, roi_size=48, roi_scale=1.5),
        is_demo=True,
        operating_points=(
            OperatingPoint("never", 1e9, 0.0, 1.0),
            OperatingPoint("always", -1e9, 1.0, 0.0),
        ),
    )
    save_bundle(out, holistic=holistic, attention=attention, manifest=manifest)
    return out


def test_each_cad_destination_gets_marks_required_above_its_own_operating_point(
    node_factory: Any,
    bundle_with_points: Path,
    synth_exams: list[Any],
    workstation: tuple[int, Path],
    tmp_path: Path,
) -> None:
    port, folder = workstation
    node = node_factory(score=True, model_bundle=bundle_with_points)
    add_destination(node.db, "strict", ae_title="WS", host="127.0.0.1", port=port, outputs="cad-sr")
    add_destination(
        node.db,
        "eager",
        ae_title="WS",
        host="127.0.0.1",
        port=port,
        outputs="cad-sr",
        cad_operating_point="always",
    )
    exam = synth_exams[2]
    assert storescu(node.scp.port, exam.files).returncode == 0
    detail = wait_for(lambda: _all_delivered(node, exam.study_uid), timeout=120, interval=0.3)
    by_destination = {
        d["destination"]: d["sop_instance_uid"] for d in detail["result"]["deliveries"]
    }
    assert sorted(by_destination) == ["eager", "strict"]
    assert by_destination["eager"] != by_destination["strict"]
    intents = {}
    for name, uid in by_destination.items():
        path = wait_for(lambda uid=uid: next((p for p in folder.iterdir() if uid in p.name), None))
        ds = pydicom.dcmread(path)
        intents[name] = {
            str(e.value[0].CodeValue)
            for e in ds.iterall()
            if e.keyword == "ConceptCodeSequence" and e.value[0].CodeValue in ("111150", "111151")
        }
    assert intents == {"strict": {"111151"}, "eager": {"111150"}}  # optional / required
