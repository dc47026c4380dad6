"""Web benchmark on a large database: mammo-node at 100 000 exams, beside Orthanc's DICOMweb.

1. Files ``--filed-exams`` synthetic 4-view MG exams (128 x 104 pixels, 16-bit, ~28 KB a file;
   four views rendered once by mammo_node.synth, then given exam n's patient, date, accession
   and UIDs from ``mammo_node.synth.bulk.bulk_exam``) into mammo-node through the Ingestor
   (the one ingest path: fsynced file + index row; 4 threads) and into Orthanc with dcmtk
   storescu (4 associations). These are the only files: WADO-RS reads them.
2. Round 1, the same data on both servers: latency of QIDO-RS study searches by PatientID, by
   a one-month StudyDate range (limit 25) and by AccessionNumber, WADO-RS of one instance; on
   mammo-node also the worklist page (``/``, 200 newest exams; by risk, by category, category
   9 and above) and the exam page.
3. Adds the rows of exams ``--filed-exams`` .. ``--exams`` - 1 straight into mammo-node's
   tables (mammo_node.synth.bulk: patient, exam, 4 series, 4 instances and a result each, in
   batches; no files), ANALYZE on PostgreSQL, and measures mammo-node again at full size;
   with ``--orthanc-full`` Orthanc gets the same exams as real files (written, sent with
   storescu and deleted, 1 000 exams at a time) and is measured beside it at full size.

Latency: one client, one keep-alive connection, requests one after another with random
targets (seeded), ``--warmup`` unmeasured then ``--requests`` measured per scenario and
server, the servers taking turns in two halves (A B B A) so that other load on the machine
hits both. Prints median and p95 in ms. The servers (mammo-node: uvicorn, bearer token on
every request; Orthanc 1.10 + DICOMweb plugin, no authentication) and the client share this
machine's cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
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
JSON = "application/dicom+json"
SLOTS = ("L-CC", "L-MLO", "R-CC", "R-MLO")
Target = tuple[str, dict[str, str]]  # path, headers


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
def make_files(folder: Path, count: int, first: int = 0) -> list[Path]:
    """Real files of bulk exams first .. first + count - 1 (the values bulk rows follow)."""
    from mammo_node.synth import SynthOptions, generate_exam
    from mammo_node.synth.bulk import bulk_exam

    template = generate_exam(
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
    files = []
    for n in range(first, first + count):
        exam = bulk_exam(n)
        for slot, ds in template.datasets.items():
            ds.PatientID, ds.PatientName = exam.patient_id, exam.patient_name
            ds.StudyDate, ds.AccessionNumber = exam.study_date, exam.accession_number
            ds.StudyInstanceUID = exam.study_uid
            ds.SeriesInstanceUID = exam.series_uid(slot)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = exam.sop_uid(slot)
            path = folder / f"{n:07d}-{slot}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return files


def stream_into_orthanc(
    orthanc: Orthanc, folder: Path, first: int, count: int, chunk: int = 1000
) -> tuple[float, float]:
    """Exams first .. first + count - 1 as files into Orthanc, ``chunk`` exams at a time
    (written, sent with storescu, deleted: 400 000 files would fill the disk); (all seconds,
    seconds sending)."""
    started, sending = time.perf_counter(), 0.0
    for start in range(first, first + count, chunk):
        files = make_files(folder, min(chunk, first + count - start), first=start)
        sending += orthanc.load(files)
        shutil.rmtree(folder)
    return time.perf_counter() - started, sending


def ingest_mammo_node(data_dir: Path, db_url: str | None, files: list[Path]) -> float:
    from mammo_node.config import Settings
    from mammo_node.db.session import Database, upgrade
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore

    settings = Settings(data_dir=data_dir, db_url=db_url, min_free_disk_mb=0)
    upgrade(settings.database_url, storage_dir=settings.storage_dir)
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


def add_bulk_rows(data_dir: Path, db_url: str | None, first: int, count: int) -> float:
    from sqlalchemy import text

    from mammo_node.config import Settings
    from mammo_node.db.session import Database
    from mammo_node.synth.bulk import insert_index_rows

    settings = Settings(data_dir=data_dir, db_url=db_url, min_free_disk_mb=0)
    db = Database(settings.database_url)
    started = time.perf_counter()
    insert_index_rows(db, first=first, count=count)
    if db.dialect == "postgresql":  # what autovacuum would have done by then
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
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


# --- latency ------------------------------------------------------------------------------------
@dataclass
class Latency:
    samples_ms: list[float]
    errors: int
    mean_bytes: float

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    @property
    def p95(self) -> float:
        ranked = sorted(self.samples_ms)
        return ranked[min(len(ranked) - 1, int(0.95 * len(ranked)))] if ranked else float("nan")


def timed(port: int, targets: list[Target], count: int, seed: int) -> Latency:
    """``count`` requests one after another on one keep-alive connection, random targets."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    samples, errors, sizes = [], 0, []
    for _ in range(count):
        path, headers = targets[rng.randrange(len(targets))]
        started = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            errors += 1
            continue
        elapsed = 1000 * (time.perf_counter() - started)
        if response.status != 200 or not body:
            errors += 1
            continue
        samples.append(elapsed)
        sizes.append(len(body))
    conn.close()
    return Latency(samples, errors, statistics.fmean(sizes) if sizes else 0.0)


Scenarios = dict[str, list[Target]]


def dicomweb_scenarios(root: str, exams: list[int], auth: dict[str, str]) -> Scenarios:
    from mammo_node.synth.bulk import bulk_exam

    json_headers = {**auth, "Accept": JSON}
    chosen = [bulk_exam(n) for n in exams]
    months = sorted({e.study_date[:6] for e in chosen})
    return {
        "QIDO studies?PatientID=": [
            (f"{root}/studies?PatientID={e.patient_id}", json_headers) for e in chosen
        ],
        "QIDO studies?StudyDate=<month>&limit=25": [
            (f"{root}/studies?StudyDate={m}01-{m}31&limit=25", json_headers) for m in months
        ],
        "QIDO studies?AccessionNumber=": [
            (f"{root}/studies?AccessionNumber={e.accession_number}", json_headers) for e in chosen
        ],
    }


def wado_targets(root: str, exams: list[int], auth: dict[str, str]) -> list[Target]:
    from mammo_node.synth.bulk import bulk_exam

    targets = []
    for n in exams:
        exam = bulk_exam(n)
        for slot in SLOTS:
            path = (
                f"{root}/studies/{exam.study_uid}/series/{exam.series_uid(slot)}"
                f"/instances/{exam.sop_uid(slot)}"
            )
            targets.append((path, {**auth, "Accept": MULTIPART}))
    return targets


def page_scenarios(exams: list[int], auth: dict[str, str]) -> Scenarios:
    from mammo_node.synth.bulk import bulk_exam

    return {
        "worklist page / (200 newest)": [("/", auth)],
        "worklist by risk /?sort=risk": [("/?sort=risk", auth)],
        "worklist by category /?sort=category": [("/?sort=category", auth)],
        "worklist triage /?min_category=9": [("/?min_category=9&sort=risk", auth)],
        "exam page /exams/<uid>": [(f"/exams/{bulk_exam(n).study_uid}", auth) for n in exams],
    }


def sample(rng: random.Random, upto: int, count: int = 2000) -> list[int]:
    return sorted(rng.sample(range(upto), min(upto, count)))


def measure(
    servers: list[tuple[str, int, Scenarios]], warmup: int, requests: int
) -> dict[str, dict[str, Latency]]:
    """Per scenario, each server in two halves, taking turns A B then B A."""
    out: dict[str, dict[str, Latency]] = {name: {} for name, _, _ in servers}
    names = [s for s in servers[0][2] if all(s in work for _, _, work in servers)]
    names += [s for _, _, work in servers for s in work if s not in names]
    for scenario in names:
        present = [(name, port, work) for name, port, work in servers if scenario in work]
        parts: dict[str, list[Latency]] = {name: [] for name, _, _ in present}
        for half, order in enumerate((present, present[::-1])):
            for name, port, work in order:
                timed(port, work[scenario], warmup, seed=1000 + half)
                parts[name].append(timed(port, work[scenario], requests // 2, seed=half))
        for name, _, _ in present:
            merged = Latency(
                [x for p in parts[name] for x in p.samples_ms],
                sum(p.errors for p in parts[name]),
                statistics.fmean(p.mean_bytes for p in parts[name]),
            )
            out[name][scenario] = merged
            print(
                f"  {name:28s} {scenario:42s} median {merged.median:7.1f} ms   "
                f"p95 {merged.p95:7.1f} ms   errors {merged.errors}   "
                f"({merged.mean_bytes / 1024:.1f} KiB/answer)",
                flush=True,
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--exams", type=int, default=100_000, help="mammo-node's full size")
    parser.add_argument(
        "--filed-exams",
        type=int,
        default=1000,
        help="exams filed as real files into both servers (4 files each)",
    )
    parser.add_argument("--requests", type=int, default=200, help="measured per scenario")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--db-url", default=None, help="mammo-node database (default SQLite)")
    parser.add_argument("--no-orthanc", action="store_true", help="mammo-node only")
    parser.add_argument(
        "--orthanc-full",
        action="store_true",
        help="round 2 fills Orthanc to --exams too (files written and sent in chunks)",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--serve", nargs=3, metavar=("DATA_DIR", "DB_URL", "PORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve_mammo_node(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    if not 1 <= args.filed_exams <= args.exams:
        sys.exit("--filed-exams should be between 1 and --exams")
    tools = ("storescu", "Orthanc") if not args.no_orthanc else ()
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install orthanc, orthanc-dicomweb and dcmtk (make apt)")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-web-"))
    node_proc = orthanc = None
    backend = "PostgreSQL" if args.db_url else "SQLite"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rng = random.Random(11)
    try:
        started = time.perf_counter()
        files = make_files(work / "files", args.filed_exams)
        megabytes = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"{args.filed_exams} synthetic 4-view MG exams, {len(files)} files ({megabytes:.0f} "
            f"MB) in {time.perf_counter() - started:.1f} s; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        data_dir = work / "mammo-node"
        seconds = ingest_mammo_node(data_dir, args.db_url, files)
        print(
            f"mammo-node ({backend}): {len(files)} files through the Ingestor in {seconds:.1f} s "
            f"({len(files) / seconds:.0f} instances/s, 4 threads)",
            flush=True,
        )
        if not args.no_orthanc:
            orthanc = Orthanc(work / "orthanc")
            seconds = orthanc.load(files)
            print(
                f"Orthanc: the same {len(files)} files with storescu in {seconds:.1f} s "
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

        small = sample(rng, args.filed_exams)
        filed = f"{args.filed_exams} exams / {4 * args.filed_exams} instances"
        print(
            f"\nRound 1, {'the same data on both' if orthanc else 'the filed exams'} "
            f"({filed}): one client, {args.requests} "
            f"requests per scenario after {args.warmup} warm-up; load average "
            f"{os.getloadavg()[0]:.1f}:",
            flush=True,
        )
        node_small = {
            **dicomweb_scenarios("/dicomweb", small, auth),
            "WADO-RS instance": wado_targets("/dicomweb", small, auth),
            **page_scenarios(small, auth),
        }
        servers = [(f"mammo-node {backend}", port, node_small)]
        if orthanc is not None:
            peer = {
                **dicomweb_scenarios("/dicom-web", small, {}),
                "WADO-RS instance": wado_targets("/dicom-web", small, {}),
            }
            servers.append(("Orthanc 1.10 + DICOMweb", orthanc.http_port, peer))
        round1 = measure(servers, args.warmup, args.requests)

        added = args.exams - args.filed_exams
        if added:
            seconds = add_bulk_rows(data_dir, args.db_url, args.filed_exams, added)
            print(
                f"\nmammo-node: added the rows of {added} exams ({4 * added} instances, "
                f"{added} results) in {seconds:.1f} s ({added / seconds:.0f} exams/s)",
                flush=True,
            )
            every = sample(rng, args.exams)
            node_full = {
                **dicomweb_scenarios("/dicomweb", every, auth),
                "WADO-RS instance": wado_targets("/dicomweb", small, auth),  # the files
                **page_scenarios(every, auth),
            }
            full = f"{args.exams} exams / {4 * args.exams} instances"
            print(
                f"\nRound 2, mammo-node at full size ({full}; WADO reads the {len(files)} "
                f"filed instances); load average {os.getloadavg()[0]:.1f}:",
                flush=True,
            )
            servers = [(f"mammo-node {backend}", port, node_full)]
            if orthanc is not None and args.orthanc_full:
                seconds, sending = stream_into_orthanc(
                    orthanc, work / "orthanc-files", args.filed_exams, added
                )
                print(
                    f"Orthanc: the files of those {added} exams written and sent in "
                    f"{seconds:.0f} s ({4 * added / sending:.0f} instances/s while sending); "
                    f"{orthanc.count()} instances; load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                peer_full = {
                    **dicomweb_scenarios("/dicom-web", every, {}),
                    "WADO-RS instance": wado_targets("/dicom-web", small, {}),
                }
                servers.append(("Orthanc 1.10 + DICOMweb", orthanc.http_port, peer_full))
            round2 = measure(servers, args.warmup, args.requests)
        else:
            round2 = {}
        summarise(round1, round2, filed, args.exams)
    finally:
        if node_proc is not None:
            node_proc.terminate()
            node_proc.wait(30)
        if orthanc is not None:
            orthanc.stop()
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def summarise(
    round1: dict[str, dict[str, Latency]],
    round2: dict[str, dict[str, Latency]],
    filed: str,
    exams: int,
) -> None:
    names = list(round1)
    node = round1[names[0]]
    peer = round1[names[1]] if len(names) > 1 else {}
    full_names = list(round2)
    full = round2[full_names[0]] if full_names else {}
    peer_full = round2[full_names[1]] if len(full_names) > 1 else {}
    print(f"\nmedian / p95 ms; load average at the end {os.getloadavg()[0]:.1f}")
    header = f"  {'scenario':42s} {'mammo-node':>17s}"
    header += f" {'Orthanc':>17s}" if peer else ""
    header += f" {'mammo-node':>17s}" if full else ""
    header += f" {'Orthanc':>17s}" if peer_full else ""
    print(header)
    sizes = f"  {'':42s} {filed[: filed.index(' exams')] + ' exams':>17s}"
    sizes += f" {filed[: filed.index(' exams')] + ' exams':>17s}" if peer else ""
    sizes += f" {f'{exams} exams':>17s}" if full else ""
    sizes += f" {f'{exams} exams':>17s}" if peer_full else ""
    print(sizes)

    def show(f: Latency | None) -> str:
        return f"{f.median:7.1f} / {f.p95:7.1f}" if f is not None else f"{'-':>17s}"

    for scenario in node:
        line = f"  {scenario:42s} {show(node.get(scenario))}"
        if peer:
            line += f" {show(peer.get(scenario))}"
        if full:
            line += f" {show(full.get(scenario))}"
        if peer_full:
            line += f" {show(peer_full.get(scenario))}"
        print(line)


if __name__ == "__main__":
    main()
