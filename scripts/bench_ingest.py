"""C-STORE receive benchmark: mammo-node beside dcmtk storescp --fork and Orthanc, same run.

Full-size synthetic MG For Presentation files (FULL_SIZE_LARGE 4096x3328 and FULL_SIZE_SMALL
2294x1914, 16-bit) are sent by dcmtk `storescu` over loopback, one association per storescu
process, 1 and 4 at a time. Each receiver starts empty; the time runs from the first
storescu start to the end of a final `sync` (so it includes getting the data durable).
TCP_NODELAY=1 is set for every dcmtk program (storescu, storescp, Orthanc): their best
setting here (PERFORMANCE.md). Prints files/s, MB/s and mammo-node's ratios to the peers.

    python scripts/bench_ingest.py [--files 80] [--repeats 3] [--out bench-out/ingest]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

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

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, env=env or ENV, start_new_session=True, cwd=self.workdir
        )
        wait_port(self.port)


class MammoNode(Receiver):
    name = "mammo-node"

    def start(self) -> None:
        """The whole node (SCP, grouping, worker, exporter, web), sent to once /readyz says
        it is ready: the worker loads its model at start and that is not receive time."""
        exe = Path(sys.executable).parent / "mammo-node"
        env = dict(ENV, MAMMO_MIN_FREE_DISK_MB="0", MAMMO_HOST="127.0.0.1")
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


def send(port: int, files: list[Path], associations: int) -> float:
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
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def run(
    receiver_cls: Callable[[Path], Receiver],
    base: Path,
    files: list[Path],
    associations: int,
    repeats: int,
) -> list[float]:
    times = []
    for i in range(repeats):
        receiver = receiver_cls(base / f"{receiver_cls.__name__}-{associations}-{i}")
        receiver.start()
        try:
            subprocess.run(["sync"], check=True)
            times.append(send(receiver.port, files, associations))
        finally:
            receiver.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ingest")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install dcmtk and orthanc (make apt)")

    files = make_files(args.out / "files", args.files)
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    print(
        f"{len(files)} files, {total_mb:.0f} MB; medians of {args.repeats} runs; "
        "TCP_NODELAY=1 on every dcmtk program; time includes a final sync"
    )
    base = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.out))
    results: dict[tuple[str, int], float] = {}
    try:
        for associations in (1, 4):
            for cls in (MammoNode, StoreSCP, Orthanc):
                seconds = statistics.median(run(cls, base, files, associations, args.repeats))
                results[(cls.name, associations)] = seconds
                print(
                    f"  {cls.name:16s} {associations} assoc: {seconds:6.2f} s "
                    f"{len(files) / seconds:6.1f} files/s {total_mb / seconds:7.1f} MB/s",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("mammo-node durable throughput relative to the peers (>1 = faster):")
    for associations in (1, 4):
        ours = results[("mammo-node", associations)]
        for peer in ("storescp --fork", "Orthanc"):
            print(
                f"  {associations} assoc: mammo-node / {peer}: "
                f"{results[(peer, associations)] / ours:.2f}"
            )


if __name__ == "__main__":
    main()
