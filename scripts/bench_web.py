"""DICOMweb benchmark: mammo-node beside Orthanc's DICOMweb plugin, same data, same run.

1. Writes N small synthetic MG For Presentation files (default 10 000 = 2 500 four-view exams of
   128 x 104 pixels, 16-bit, ~28 KB each): four views rendered once by mammo_node.synth, then
   given a new patient, date, accession number and UIDs per exam.
2. Files them into mammo-node through the Ingestor (the one ingest path: fsynced file + index
   row per instance; 4 threads) and into Orthanc with dcmtk storescu (4 associations,
   TCP_NODELAY=1).
3. Runs each server in its own process (mammo-node: uvicorn with the app of mammo_node.web, a
   bearer token on every request; Orthanc 1.10 + DICOMweb plugin 1.7, no authentication) and
   loads it with 16 concurrent clients (4 processes x 4 threads, keep-alive connections, random
   targets): QIDO-RS study search by PatientID, QIDO-RS study search by a one-month StudyDate
   range (limit 25), WADO-RS retrieve of one instance (multipart, transfer-syntax=*).
   The servers take turns per scenario (A B, B A, A B: 3 s warm-up, then ``--seconds``
   measured each time) so that other load on the machine hits both; each server's figures
   are its median round. Prints requests/s, p50 and p99.

Both servers and the clients share this machine's cores; the figures are relative.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOKEN = "bench-admin-token-0123456789abcdef"
ENV = dict(os.environ, TCP_NODELAY="1")
MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
Requests = list[tuple[str, dict[str, str]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(port: int, path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no HTTP answer on port {port}{path} within {timeout} s")


# --- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    patient_id: str
    study_date: str
    study_uid: str
    series_uid: str
    sop_uid: str


def make_files(folder: Path, count: int) -> tuple[list[Path], list[Item]]:
    from mammo_node.synth import SynthOptions, generate_exam, make_uid

    exam = generate_exam(
        np.random.default_rng(7),
        options=SynthOptions(rows=128, columns=104),
        patient_id="BENCH-TEMPLATE",
        outcome="normal",
        cancer_laterality="",
        study_date=dt.date(2025, 1, 1),
        photometric="MONOCHROME2",
        bits_stored=12,
    )
    folder.mkdir(parents=True, exist_ok=True)
    files, items = [], []
    first = dt.date(2023, 1, 1)
    for n in range(count // 4):
        day = (first + dt.timedelta(days=n % 730)).strftime("%Y%m%d")
        patient = f"BENCH{n:05d}"
        study = make_uid("bench-study", n)
        for slot, ds in exam.datasets.items():
            series, sop = make_uid("bench-series", n, slot), make_uid("bench-sop", n, slot)
            ds.PatientID, ds.PatientName = patient, f"BENCH^PATIENT{n:05d}"
            ds.StudyDate, ds.AccessionNumber = day, f"A{n:07d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            path = folder / f"{n:05d}-{slot}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            items.append(Item(patient, day, study, series, sop))
    return files, items


def ingest_mammo_node(data_dir: Path, db_url: str | None, files: list[Path]) -> float:
    from mammo_node.config import Settings
    from mammo_node.db.session import Database, upgrade
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore

    settings = Settings(data_dir=data_dir, db_url=db_url, min_free_disk_mb=0)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    store = InstanceStore(settings.storage_dir)
    ingestor = Ingestor(settings, db, store)

    def one(path: Path) -> None:
        temp = store.temp_path()
        shutil.copyfile(path, temp)
        ingestor.ingest_file(temp, source="stow", calling_ae="BENCH", peer_host="127.0.0.1")

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, files))
    seconds = time.perf_counter() - started
    db.dispose()
    return seconds


def serve_mammo_node(data_dir: str, db_url: str, port: int) -> None:
    """Child process: the web app of mammo-node on ``port`` until killed."""
    import logging

    from mammo_node.config import Settings
    from mammo_node.db.session import Database
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore
    from mammo_node.web.server import WebServer

    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        data_dir=Path(data_dir),
        db_url=db_url or None,
        host="127.0.0.1",
        http_port=port,
        api_tokens=[f"bench:admin:{TOKEN}"],
        min_free_disk_mb=0,
    )
    db = Database(settings.database_url)
    server = WebServer(settings, db, Ingestor(settings, db, InstanceStore(settings.storage_dir)))
    server.start()
    threading.Event().wait()


class Orthanc:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port, self.dicom_port = free_port(), free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench",
            "StorageDirectory": str(workdir / "db"),
            "IndexDirectory": str(workdir / "db"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (workdir / "orthanc.json").write_text(json.dumps(config))
        log = (workdir / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(
            ["Orthanc", str(workdir / "orthanc.json")],
            stdout=log,
            stderr=log,
            env=ENV,
            start_new_session=True,
            cwd=workdir,
        )
        wait_http(self.http_port, "/system")

    def load(self, files: list[Path], associations: int = 4) -> float:
        groups = [files[i::associations] for i in range(associations)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(self.dicom_port), *map(str, g)],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for g in groups
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"storescu to Orthanc failed: {err.decode()[-400:]}")
        return time.perf_counter() - started

    def count(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port)
        conn.request("GET", "/statistics")
        return int(json.loads(conn.getresponse().read())["CountInstances"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# --- load ---------------------------------------------------------------------------------------
def client_process(
    port: int,
    requests: Requests,
    seconds: float,
    threads: int,
    seed: int,
    out: multiprocessing.Queue,
) -> None:  # type: ignore[type-arg]
    results: list[tuple[float, int, int]] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local = []
        while time.perf_counter() < stop_at:
            path, headers = requests[rng.randrange(len(requests))]
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status, body = 599, b""
            local.append((time.perf_counter() - started, status, len(body)))
        with lock:
            results.extend(local)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(results)


@dataclass
class Figures:
    requests: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    mean_bytes: float


def load(
    port: int, requests: Requests, seconds: float, processes: int = 4, threads: int = 4
) -> Figures:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=client_process, args=(port, requests, seconds, threads, p, queue))
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    results = [r for _ in procs for r in queue.get()]
    for proc in procs:
        proc.join()
    ok = [r for r in results if r[1] == 200 and r[2] > 0]
    latencies = sorted(r[0] for r in ok) or [float("nan")]
    return Figures(
        requests=len(results),
        errors=len(results) - len(ok),
        per_second=len(ok) / seconds,
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        mean_bytes=statistics.fmean(r[2] for r in ok) if ok else 0.0,
    )


def scenarios(items: list[Item], root: str, headers: dict[str, str]) -> dict[str, Requests]:
    json_headers = {**headers, "Accept": "application/dicom+json"}
    patients = sorted({i.patient_id for i in items})
    months = sorted({i.study_date[:6] for i in items})
    return {
        "QIDO-RS studies?PatientID=": [
            (f"{root}/studies?PatientID={p}", json_headers) for p in patients
        ],
        "QIDO-RS studies?StudyDate=<month>&limit=25": [
            (f"{root}/studies?StudyDate={m}01-{m}31&limit=25", json_headers) for m in months
        ],
        "WADO-RS instance": [
            (
                f"{root}/studies/{i.study_uid}/series/{i.series_uid}/instances/{i.sop_uid}",
                {**headers, "Accept": MULTIPART},
            )
            for i in items
        ],
    }


Target = tuple[str, int, dict[str, Requests]]


def show(name: str, scenario: str, figures: Figures, note: str = "") -> None:
    print(
        f"  {name:10s} {scenario:44s} {figures.per_second:8.0f} req/s  "
        f"p50 {figures.p50_ms:7.1f} ms  p99 {figures.p99_ms:7.1f} ms  "
        f"errors {figures.errors}  ({figures.mean_bytes / 1024:.1f} KiB/answer){note}",
        flush=True,
    )


def measure(targets: list[Target], seconds: float, rounds: int) -> dict[str, dict[str, Figures]]:
    """Per scenario the servers take turns (A B, then B A ...), so that a change in the load
    of the machine hits both; each server's figures are its round with the median rate."""
    out: dict[str, dict[str, Figures]] = {name: {} for name, _, _ in targets}
    for scenario in targets[0][2]:
        runs: dict[str, list[Figures]] = {name: [] for name, _, _ in targets}
        for round_ in range(rounds):
            order = targets if round_ % 2 == 0 else targets[::-1]
            for name, port, work in order:
                load(port, work[scenario], 3.0)  # warm-up
                runs[name].append(load(port, work[scenario], seconds))
        for name, _, _ in targets:
            ranked = sorted(runs[name], key=lambda f: f.per_second)
            out[name][scenario] = ranked[len(ranked) // 2]
            rates = ", ".join(f"{f.per_second:.0f}" for f in runs[name])
            show(name, scenario, out[name][scenario], f"  rounds: {rates} req/s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured per round")
    parser.add_argument("--rounds", type=int, default=3, help="turns per server and scenario")
    parser.add_argument("--db-url", default=None, help="mammo-node database (default SQLite)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--serve", nargs=3, metavar=("DATA_DIR", "DB_URL", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve_mammo_node(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    for tool in ("Orthanc", "storescu"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install orthanc, orthanc-dicomweb and dcmtk (make apt)")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-web-"))
    node_proc = orthanc = None
    try:
        started = time.perf_counter()
        files, items = make_files(work / "files", args.instances)
        megabytes = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"{len(files)} synthetic MG files ({megabytes:.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        data_dir = work / "mammo-node"
        seconds = ingest_mammo_node(data_dir, args.db_url, files)
        print(
            f"mammo-node: indexed through the Ingestor in {seconds:.1f} s "
            f"({len(files) / seconds:.0f} instances/s, 4 threads)",
            flush=True,
        )
        orthanc = Orthanc(work / "orthanc")
        seconds = orthanc.load(files)
        print(
            f"Orthanc:    stored with storescu in {seconds:.1f} s "
            f"({len(files) / seconds:.0f} instances/s, 4 associations); "
            f"{orthanc.count()} instances",
            flush=True,
        )

        port = free_port()
        node_proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(data_dir), args.db_url or "", str(port)],
            env=ENV,
            start_new_session=True,
        )
        wait_http(port, "/healthz")
        print(
            f"\n16 concurrent clients; {args.rounds} rounds of {args.seconds:.0f} s (after 3 s "
            f"warm-up) per server and scenario, taking turns; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores shared by servers and clients:"
        )
        figures = measure(
            [
                (
                    "mammo-node",
                    port,
                    scenarios(items, "/dicomweb", {"Authorization": f"Bearer {TOKEN}"}),
                ),
                ("Orthanc", orthanc.http_port, scenarios(items, "/dicom-web", {})),
            ],
            args.seconds,
            args.rounds,
        )
        node, other = figures["mammo-node"], figures["Orthanc"]
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}; mammo-node / Orthanc:")
        for scenario in node:
            a, b = node[scenario], other[scenario]
            print(
                f"  {scenario:44s} throughput {a.per_second / b.per_second:5.2f}x   "
                f"p99 {a.p99_ms / b.p99_ms:5.2f}x"
            )
    finally:
        if node_proc is not None:
            node_proc.terminate()
            node_proc.wait(30)
        if orthanc is not None:
            orthanc.stop()
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
