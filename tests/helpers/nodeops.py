"""Helpers for the operations tests: a node in its own process that scores with the tiny
bundle and delivers to a real dcmtk storescp, and a way to wait for exams to arrive there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers.node_process import NodeProcess
from tests.helpers.tools import dcmtk, free_port, storescu, wait_for


class StoreSCP:
    """dcmtk's storescp as a receiving PACS on a free port."""

    def __init__(self, folder: Path, ae_title: str = "RESULTS") -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "-aet", self.ae_title, "-od", str(self.folder), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=30, interval=0.2)
        return self

    def _answers(self) -> bool:
        run = subprocess.run(
            [dcmtk("echoscu"), "-to", "2", "-aec", self.ae_title, "127.0.0.1", str(self.port)],
            capture_output=True,
            timeout=30,
        )
        return run.returncode == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def scoring_node(make: Any, data_dir: Path, bundle: Path, **kwargs: Any) -> NodeProcess:
    """A `mammo-node serve` process scoring with ``bundle``, quick delivery retries."""
    env = {
        "MAMMO_MODEL_BUNDLE": str(bundle),
        "MAMMO_OUTBOX_BACKOFF_BASE": "0.3",
        "MAMMO_OUTBOX_BACKOFF_MAX": "1",
        "MAMMO_LOOPBACK_WITHOUT_TOKEN": "true",
        **kwargs.pop("env", {}),
    }
    return make(data_dir, **kwargs, **env)


def add_destination_by_cli(node: NodeProcess, name: str, ae_title: str, port: int) -> None:
    """`mammo-node destinations add NAME` for a peer listening on this machine."""
    node.cli(
        "destinations",
        "add",
        name,
        "--ae-title",
        ae_title,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )


def exam_json(node: NodeProcess, study_uid: str) -> dict[str, Any]:
    return json.loads(node.cli("exams", "show", study_uid, "--json").stdout)


def send_and_wait(
    node: NodeProcess, files: list[Path], study_uid: str, *, delivered: bool
) -> dict[str, Any]:
    """Send an exam; wait until it is scored and (with ``delivered``) every output delivered."""
    assert storescu(node.port, files).returncode == 0

    def done() -> dict[str, Any] | None:
        detail = exam_json(node, study_uid)
        result = detail.get("result")
        if detail["state"] != "scored" or not result:
            return None
        if delivered:
            states = [d["state"] for d in result["deliveries"]]
            if not states or any(s != "delivered" for s in states):
                return None
        return detail

    return wait_for(done, timeout=180, interval=0.5)
