"""C-STORE receive benchmark: mammo-node beside dcmtk storescp --fork and Orthanc, same run.

Full-size synthetic MG For Presentation files (FULL_SIZE_LARGE 4096x3328 and FULL_SIZE_SMALL
2294x1914, 16-bit) are sent by dcmtk `storescu` over loopback, one association per storescu
process, 1 and 4 at a time. Each receiver starts empty; the time runs from the first
storescu start to the end of a final `sync` (so it includes getting the data durable).
TCP_NODELAY=1 is set for every dcmtk program (storescu, storescp, Orthanc): their best
setting here (PERFORMANCE.md). Prints files/s, MB/s and mammo-node's ratios to the peers.

Receiving while scoring: two more rounds run with a mammo-node worker busy on a backlog of
full-size exams (``--backlog`` 4-view 4096x3328 exams, sent and READY before the timed send,
the scoring process seen claiming one): mammo-node receiving while its own worker scores,
and storescp receiving while a mammo-node beside it scores the same backlog. The scoring
bundle is a ResNet-101 pair at 976 px with seeded random weights (the production load; the
demo bundle, ResNet-18 at 128 px, with ``--scoring-bundle demo``). ``--worker-env`` adds
variants of the busy mammo-node round (e.g. ``nice0:MAMMO_WORKER_NICE=0``).

    python scripts/bench_ingest.py [--files 80] [--repeats 3] [--associations 1 4]
        [--backlog 4] [--scoring-bundle resnet101|demo] [--no-peers]
        [--worker-env NAME:VAR=VALUE,VAR=VALUE ...] [--out bench-out/ingest]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mammo_node.synth import FULL_SIZE_LARGE, FULL_SIZE_SMALL, SynthOptions, generate_exams  # noqa: E402

ENV = dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_backlog(folder: Path, exams: int) -> list[Path]:
    """``exams`` full-size 4-view exams (one rendered, the others re-identified copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.dcm"))
    if len(existing) >= 4 * exams:
        return existing[: 4 * exams]
    rows, columns = FULL_SIZE_LARGE
    exam = next(iter(generate_exams(SynthOptions(rows=rows, columns=columns, exams=1, seed=9))))
    files = []
    for n in range(exams):
        study, patient = generate_uid(), f"BACKLOG{n:03d}"
        for slot, ds in exam.datasets.items():
            ds.StudyInstanceUID = study
            ds.PatientID = patient
            ds.AccessionNumber = f"BL{n:03d}"
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = folder / f"B{n:03d}-{slot}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return files


def make_files(folder: Path, count: int) -> list[Path]:
    """count/2 large + count/2 small images: a few rendered, the rest re-identified copies."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.dcm"))
    if len(existing) >= count:
        return existing[:count]
    files: list[Path] = []
    for size, tag in ((FULL_SIZE_LARGE, "L"), (FULL_SIZE_SMALL, "S")):
        rows, columns = size
        exam = next(iter(generate_exams(SynthOptions(rows=rows, columns=columns, exams=1, seed=7))))
        templates = list(exam.datasets.values())
        for i in range(count // 2):
            ds = templates[i % len(templates)]
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if i % 4 == 0:
                ds.StudyInstanceUID = generate_uid()
            path = folder / f"{tag}{i:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return sorted(files)


class Receiver:
    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def before_send(self) -> None:
        """Called just before the timed send."""

    def after_send(self) -> str:
        """Called after it; a note printed beside the figure."""
        return ""

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, env=env or ENV, start_new_session=True, cwd=self.workdir
        )
        wait_port(self.port)


class MammoNode(Receiver):
    name = "mammo-node"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.extra_env: dict[str, str] = {}

    def start(self) -> None:
        """The whole node (SCP, grouping, worker, exporter, web), sent to once /readyz says
        it is ready: the worker loads its model at start and that is not receive time."""
        exe = Path(sys.executable).parent / "mammo-node"
        env = dict(ENV, MAMMO_MIN_FREE_DISK_MB="0", MAMMO_HOST="127.0.0.1", **self.extra_env)
        http_port = free_port()
        self._spawn(
            [
                str(exe),
                "serve",
                "--data-dir",
                str(self.workdir / "data"),
                "--port",
                str(self.port),
                "--http-port",
                str(http_port),
                "--ae-title",
                "MAMMO_NODE",
            ],
            env,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mammo-node not ready within 120 s")


class ScoringLoad(MammoNode):
    """A mammo-node whose worker is busy on a backlog of full-size exams."""

    bundle: ClassVar[Path | None] = None  # None: the packaged demo bundle
    backlog: ClassVar[list[Path]] = []
    variant: ClassVar[dict[str, str]] = {}

    def start(self) -> None:
        # the default quiet period, as in the idle round: the timed files' pixel checks
        # start after the send in both
        self.extra_env = dict(
            MAMMO_PRIOR_AFTER_DAYS="0",
            MAMMO_DEVICE="cpu",
            **({"MAMMO_MODEL_BUNDLE": str(self.bundle)} if self.bundle else {}),
            **self.variant,
        )
        super().start()
        send(self.port, self.backlog, 1, durable=False)
        deadline = time.monotonic() + 600
        while self.states().get("scoring", 0) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start scoring: {self.states()}")
            time.sleep(0.2)
        time.sleep(2.0)  # past reading the files, into the model

    def states(self) -> dict[str, int]:
        db = self.workdir / "data" / "mammo.db"
        with sqlite3.connect(db, timeout=30) as conn:
            rows = conn.execute("SELECT state, count(*) FROM exams GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def scoring_pid(self) -> int:
        """The scoring process (its pid ends the worker id of the exam it claimed)."""
        db = self.workdir / "data" / "mammo.db"
        with sqlite3.connect(db, timeout=30) as conn:
            row = conn.execute("SELECT claimed_by FROM exams WHERE state = 'scoring'").fetchone()
        return int(row[0].rsplit("/", 1)[1]) if row else 0

    def before_send(self) -> None:
        self._scored_before = self.states().get("scored", 0)
        self._pid = self.scoring_pid()
        self._cpu_before = cpu_seconds(self._pid)
        self._t0 = time.perf_counter()

    def after_send(self) -> str:
        cpu = cpu_seconds(self._pid) - self._cpu_before
        wall = time.perf_counter() - self._t0
        states = self.states()
        scored = states.get("scored", 0) - self._scored_before
        left = states.get("scoring", 0) + states.get("ready", 0)
        busy = f"scoring used {cpu / wall:.2f} CPUs, {scored} exam(s) scored, {left} left"
        if not states.get("scoring", 0):
            return f"(backlog drained: {busy})"
        return f"({busy})"


class BusyMammoNode(ScoringLoad):
    name = "mammo-node busy"


class StoreSCP(Receiver):
    name = "storescp --fork"

    def start(self) -> None:
        (self.workdir / "out").mkdir(parents=True)
        self._spawn(
            [
                "storescp",
                "--fork",
                "-aet",
                "MAMMO_NODE",
                "-od",
                str(self.workdir / "out"),
                str(self.port),
            ]
        )


class BusyStoreSCP(StoreSCP):
    """storescp receiving while a mammo-node beside it scores the same backlog."""

    name = "storescp busy"

    def start(self) -> None:
        self.load = ScoringLoad(self.workdir.with_name(self.workdir.name + "-load"))
        self.load.start()
        super().start()

    def before_send(self) -> None:
        self.load.before_send()

    def after_send(self) -> str:
        return self.load.after_send()

    def stop(self) -> None:
        super().stop()
        self.load.stop()


class Orthanc(Receiver):
    name = "Orthanc"

    def start(self) -> None:
        self.workdir.mkdir(parents=True)
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "DicomAet": "MAMMO_NODE",
            "DicomPort": self.port,
            "HttpPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
        }
        (self.workdir / "orthanc.json").write_text(json.dumps(config))
        self._spawn(["Orthanc", str(self.workdir / "orthanc.json")])


def send(port: int, files: list[Path], associations: int, durable: bool = True) -> float:
    groups = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", "MAMMO_NODE", "127.0.0.1", str(port), *map(str, group)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    if durable:
        subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def run_once(receiver: Receiver, files: list[Path], associations: int) -> tuple[float, str]:
    receiver.start()
    try:
        subprocess.run(["sync"], check=True)
        receiver.before_send()
        seconds = send(receiver.port, files, associations)
        return seconds, receiver.after_send()
    finally:
        receiver.stop()


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """'nice19:MAMMO_WORKER_NICE=19,MAMMO_WORKER_SCHED_IDLE=true' -> name, environment."""
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--backlog", type=int, default=4, help="full-size exams to score")
    parser.add_argument("--scoring-bundle", choices=["resnet101", "demo"], default="resnet101")
    parser.add_argument(
        "--worker-env",
        nargs="*",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="extra busy mammo-node rounds with these settings",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip Orthanc")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ingest")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install dcmtk and orthanc (make apt)")

    files = make_files(args.out / "files", args.files)
    ScoringLoad.backlog = make_backlog(args.out / "backlog", args.backlog)
    if args.scoring_bundle == "resnet101":
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_pipeline import make_bundle

        ScoringLoad.bundle = make_bundle(args.out / "bundles", "resnet101", 976)
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    print(
        f"{len(files)} files, {total_mb:.0f} MB; medians of {args.repeats} runs; "
        "TCP_NODELAY=1 on every dcmtk program; time includes a final sync; 'busy': a "
        f"mammo-node worker scores a backlog of {args.backlog} full-size exams "
        f"({args.scoring_bundle} bundle) during the send; {os.cpu_count()} CPUs"
    )
    rounds: list[tuple[str, Callable[[Path], Receiver], dict[str, str]]] = [
        ("mammo-node", MammoNode, {}),
        ("mammo-node busy", BusyMammoNode, {}),
    ]
    for text in args.worker_env:
        name, env = parse_variant(text)
        rounds.append((f"mammo-node busy {name}", BusyMammoNode, env))
    rounds += [("storescp --fork", StoreSCP, {}), ("storescp busy", BusyStoreSCP, {})]
    if not args.no_peers:
        rounds.append(("Orthanc", Orthanc, {}))
    base = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.out))
    results: dict[tuple[str, int], float] = {}
    try:
        for associations in args.associations:
            # repeats outermost: every receiver sees the same stretch of a shared machine
            times: dict[str, list[float]] = {name: [] for name, _, _ in rounds}
            notes: dict[str, list[str]] = {name: [] for name, _, _ in rounds}
            for i in range(args.repeats):
                for n, (name, cls, env) in enumerate(rounds):
                    ScoringLoad.variant = env
                    receiver = cls(base / f"{cls.__name__}-{n}-{associations}-{i}")
                    seconds, note = run_once(receiver, files, associations)
                    times[name].append(seconds)
                    notes[name].append(note)
            for name, _, _ in rounds:
                seconds = statistics.median(times[name])
                results[(name, associations)] = seconds
                spread = f"{total_mb / max(times[name]):.0f}-{total_mb / min(times[name]):.0f}"
                print(
                    f"  {name:24s} {associations} assoc: {seconds:6.2f} s "
                    f"{len(files) / seconds:6.1f} files/s {total_mb / seconds:7.1f} MB/s "
                    f"(runs {spread}) {' '.join(notes[name])}",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("mammo-node durable throughput relative to the peers (>1 = faster):")
    peers = ["storescp --fork"] + ([] if args.no_peers else ["Orthanc"])
    for associations in args.associations:
        ours = results[("mammo-node", associations)]
        for peer in peers:
            print(
                f"  {associations} assoc: mammo-node / {peer}: "
                f"{results[(peer, associations)] / ours:.2f}"
            )
        busy_peer = results[("storescp busy", associations)]
        for name, _, _ in rounds:
            if name.startswith("mammo-node busy"):
                busy = results[(name, associations)]
                print(
                    f"  {associations} assoc: {name} / mammo-node alone: {ours / busy:.2f} "
                    f"(goal >= 0.7); / storescp busy: {busy_peer / busy:.2f}"
                )


if __name__ == "__main__":
    main()
