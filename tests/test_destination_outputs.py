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
from tests.conftest import dcmtk, free_port, storescu, wait_for


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
