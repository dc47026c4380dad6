"""Soak: mixed traffic into a real `mammo-node serve` while it is SIGKILLed and restarted, its
destination goes down and comes back, and its disk "fills" (min_free_disk_mb above what is
free). Prints one JSON object of figures: instances sent, acknowledged, refused, lost (must be
0), duplicates delivered (must be 0), outputs delivered, peak memory of the node and of its
scoring process.

    make soak                       # SOAK_MINUTES=3
    python scripts/soak.py --minutes 3 --senders 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    DigitalMammographyXRayImageStorageForPresentation,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mammo_node.synth import SynthOptions, generate_exams  # noqa: E402
from mammo_node.synth.habits import recent  # noqa: E402
from mammo_node.writers import sop_classes_for_outputs  # noqa: E402

TOKEN = "soak-admin-token-0123456789abcdef"
PACE_SECONDS = float(os.environ.get("SOAK_PACE_SECONDS", 4))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_bundle(folder: Path) -> Path:
    import torch

    from mammo_node.ml.bundle import BundleManifest, save_bundle
    from mammo_node.ml.models import build_model
    from mammo_node.ml.preprocess import PreprocessSettings

    torch.manual_seed(0)
    holistic, attention = build_model(arch="resnet18"), build_model(arch="resnet18")
    attention.load_state_dict(holistic.state_dict())
    out = folder / "bundle"
    save_bundle(
        out,
        holistic=holistic,
        attention=attention,
        manifest=BundleManifest(
            name="mammo-node-soak",
            version="0.0.1",
            architecture="resnet18",
            preprocess=PreprocessSettings(input_size=64, roi_size=48, roi_scale=1.5),
            is_demo=True,
        ),
    )
    return out


class Destination:
    """A PACS stand-in that counts every object it is sent and answers Study Root C-FIND at
    IMAGE level over what it holds (as a PACS does); can go down and come back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: Counter[str] = Counter()
        self.held: dict[str, tuple[str, str]] = {}
        self.lock = threading.Lock()
        self.server: Any = None

    def up(self) -> None:
        ae = AE(ae_title="SOAKPACS")
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        for sop_class in sop_classes_for_outputs():
            ae.add_supported_context(sop_class)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.server = ae.start_server(
                    ("127.0.0.1", self.port),
                    block=False,
                    evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_C_FIND, self._find)],
                )
                return
            except OSError:  # the port is still held by connections being torn down
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def down(self) -> None:
        if self.server is not None:
            for assoc in list(self.server.active_associations):
                assoc.abort()
            self.server.shutdown()
            self.server = None

    def _store(self, event: Any) -> int:
        ds = event.dataset
        with self.lock:
            uid = str(event.request.AffectedSOPInstanceUID)
            self.received[uid] += 1
            self.held[uid] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        return 0x0000

    def _find(self, event: Any) -> Any:
        query = event.identifier
        uid = str(query.get("SOPInstanceUID", ""))
        with self.lock:
            where = self.held.get(uid)
        if where == (
            str(query.get("StudyInstanceUID", "")),
            str(query.get("SeriesInstanceUID", "")),
        ):
            answer = Dataset()
            answer.QueryRetrieveLevel = "IMAGE"
            answer.StudyInstanceUID, answer.SeriesInstanceUID = where
            answer.SOPInstanceUID = uid
            yield 0xFF00, answer
        yield 0x0000, None


class Node:
    def __init__(self, folder: Path, bundle: Path) -> None:
        self.data = folder / "data"
        self.port, self.http_port = free_port(), free_port()
        self.log = (folder / "node.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.bundle = bundle
        self.peak_node = 0
        self.peak_worker = 0

    def start(self, min_free_disk_mb: int = 0) -> None:
        env = {
            **os.environ,
            "MAMMO_MODEL_BUNDLE": str(self.bundle),
            "MAMMO_DEVICE": "cpu",
            "MAMMO_QUIET_SECONDS": "1",
            "MAMMO_STABLE_SECONDS": "5",
            "MAMMO_MIN_FREE_DISK_MB": str(min_free_disk_mb),
            "MAMMO_API_TOKENS": f"soak:admin:{TOKEN}",
            "MAMMO_OUTBOX_BACKOFF_BASE": "0.5",
            "MAMMO_OUTBOX_BACKOFF_MAX": "3",
            "MAMMO_HOST": "127.0.0.1",
        }
        cli = str(Path(sys.executable).parent / "mammo-node")
        self.proc = subprocess.Popen(
            [
                *(cli, "serve", "--data-dir", str(self.data), "--port", str(self.port)),
                *("--http-port", str(self.http_port), "--ae-title", "MAMMO_NODE"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _STARTED.append(self.proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.healthy():  # not C-ECHO: a "full" node refuses associations
                return
            time.sleep(0.3)
        raise RuntimeError("the node did not come up; see node.log")

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            return httpx.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def echo(self) -> bool:
        ae = AE(ae_title="SOAK")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 3
        assoc = ae.associate("127.0.0.1", self.port, ae_title="MAMMO_NODE")
        if not assoc.is_established:
            return False
        ok = bool(assoc.send_c_echo())
        assoc.release()
        return ok

    def sample_memory(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.peak_node = max(self.peak_node, _status_kb(self.proc.pid, "VmHWM"))
        for child in _children(self.proc.pid):
            self.peak_worker = max(self.peak_worker, _status_kb(child, "VmHWM"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_memory()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_memory()
            self.proc.terminate()
            self.proc.wait(90)


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.acknowledged: set[str] = set()
        self.refused = 0

    def record(self, uid: str, ok: bool) -> None:
        with self.lock:
            self.sent += 1
            if ok:
                self.acknowledged.add(uid)
            else:
                self.refused += 1


def send_dimse(node: Node, datasets: list[Dataset], ledger: Ledger, aet: str) -> None:
    ae = AE(ae_title=aet)
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    try:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MAMMO_NODE")
    except OSError:
        assoc = None
    if assoc is None or not assoc.is_established:
        for ds in datasets:
            ledger.record(str(ds.SOPInstanceUID), False)
        return
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
                ok = bool(status) and int(status.Status) == 0
            except Exception:  # the node was killed mid-association
                ok = False
            ledger.record(str(ds.SOPInstanceUID), ok)
    finally:
        if assoc.is_established:
            assoc.release()


def send_stow(node: Node, datasets: list[Dataset], ledger: Ledger) -> None:
    from io import BytesIO

    boundary = "soak-boundary"
    body = b""
    for ds in datasets:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += buffer.getvalue() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    stored: set[str] = set()
    try:
        answer = httpx.post(
            f"http://127.0.0.1:{node.http_port}/dicomweb/studies",
            content=body,
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=60,
        )
        if answer.status_code in (200, 202):
            for item in answer.json().get("00081199", {}).get("Value", []):
                stored.add(item["00081155"]["Value"][0])
    except (httpx.HTTPError, ValueError):
        pass
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        ledger.record(uid, uid in stored)


def sender(node: Node, ledger: Ledger, index: int, stop: threading.Event) -> None:
    seed = 1000 + index
    while not stop.is_set():
        options = SynthOptions(rows=256, columns=208, exams=2, seed=seed)
        seed += 100
        for exam in generate_exams(options):
            datasets = list(exam.datasets.values())
            recent(datasets)  # taken today: a current exam, scored (not a prior)
            if index % 3 == 2:
                send_stow(node, datasets, ledger)
            else:
                send_dimse(node, datasets, ledger, f"MODALITY{index}")
            if stop.wait(PACE_SECONDS):  # a pace two CPU cores can also score
                return


def main() -> int:
    try:
        return _soak()
    finally:
        for proc in _STARTED:
            if proc.poll() is None:
                proc.kill()


_STARTED: list[subprocess.Popen[bytes]] = []


def _soak() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 3)))
    parser.add_argument("--senders", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mammo-soak-"))
    node = Node(folder, tiny_bundle(folder))
    pacs = Destination(free_port())
    pacs.up()
    node.start()
    subprocess.run(
        [
            *(str(Path(sys.executable).parent / "mammo-node"), "destinations", "add", "pacs"),
            *("--ae-title", "SOAKPACS", "--host", "127.0.0.1", "--port", str(pacs.port)),
            *("--data-dir", str(node.data)),
        ],
        check=True,
        capture_output=True,
    )
    ledger, stop = Ledger(), threading.Event()
    threads = [
        threading.Thread(target=sender, args=(node, ledger, i, stop), daemon=True)
        for i in range(args.senders)
    ]
    for thread in threads:
        thread.start()
    total = args.minutes * 60
    events = {"kills": 0, "destination_down": 0, "disk_full_restarts": 0}
    started = time.monotonic()
    phase = 0
    while (elapsed := time.monotonic() - started) < total:
        node.sample_memory()
        step = int(elapsed // (total / 6))
        if step > phase:
            phase = step
            if phase in (1, 4):  # SIGKILL and restart
                node.kill()
                events["kills"] += 1
                node.start()
            elif phase == 2:  # the destination goes down for a while
                pacs.down()
                events["destination_down"] += 1
            elif phase == 3:  # it comes back; the disk "fills" (refuse new instances)
                pacs.up()
                node.kill()
                events["kills"] += 1
                node.start(min_free_disk_mb=10**9)
                events["disk_full_restarts"] += 1
            elif phase == 5:  # space again
                node.stop()
                node.start()
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(60)
    # let the node finish scoring and delivering what it acknowledged
    db_path = node.data / "mammo.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        node.sample_memory()
        with sqlite3.connect(db_path) as db:
            busy = db.execute(
                "SELECT count(*) FROM exams WHERE state IN ('receiving','ready','scoring')"
            ).fetchone()[0]
            pending = db.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[
                0
            ]
        if not busy and not pending:
            break
        time.sleep(1)
    node.sample_memory()
    with sqlite3.connect(db_path) as db:
        stored = {uid for (uid,) in db.execute("SELECT sop_instance_uid FROM instances")}
        paths = {
            uid: rel for uid, rel in db.execute("SELECT sop_instance_uid, rel_path FROM instances")
        }
        states = dict(db.execute("SELECT state, count(*) FROM exams GROUP BY state").fetchall())
        outbox = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
        found_by_query = db.execute(
            "SELECT count(*) FROM audit_events"
            " WHERE action = 'delivered' AND detail LIKE '%C-FIND%'"
        ).fetchone()[0]
    on_disk = {uid for uid in stored if (node.data / "instances" / paths[uid]).is_file()}
    lost = sorted(ledger.acknowledged - on_disk)
    duplicates = sum(1 for count in pacs.received.values() if count > 1)
    node.stop()
    pacs.down()
    figures = {
        "minutes": args.minutes,
        "senders": args.senders,
        "events": events,
        "instances_sent": ledger.sent,
        "acknowledged": len(ledger.acknowledged),
        "refused": ledger.refused,
        "lost": len(lost),
        "exams": states,
        "outbox": outbox,
        "in_doubt_found_at_pacs": found_by_query,
        "outputs_delivered": len(pacs.received),
        "duplicates_delivered": duplicates,
        "peak_rss_node_mb": node.peak_node // 1024,
        "peak_rss_scoring_process_mb": node.peak_worker // 1024,
        "data": str(folder),
    }
    print(json.dumps(figures, indent=2))
    return 0 if not lost and not duplicates else 1


if __name__ == "__main__":
    sys.exit(main())
