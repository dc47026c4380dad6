"""Scoring benchmark: last image's C-STORE response -> the SR at a listening storescp, per stage;
and model throughput per batch size.

A full-size synthetic 4-view exam (4096 x 3328, 16-bit) is sent with dcmtk storescu to a real
`mammo-node serve` whose model bundle is a ResNet-101 pair at 976 x 976 (roi 976 at 2x; seeded
random weights: timing does not depend on training), and whose destination is a dcmtk storescp.
The time runs from storescu's exit (the last C-STORE response) to the exam SR's file appearing
in storescp's folder, split with the node's own records into: grouping wait (quiet period +
pixel check), load, preprocess, holistic + saliency, attention, writers, store, send.
The bare model cost (4 x [forward + input gradient] + 4 x attention forward on random inputs,
same precision, same process settings) is measured in the same run for the ratio.

Per exam it prints decode (read the files + decode the pixels), preprocess (LUT, resizes, ROI,
saliency onto the rescaled grid the writers resample), model (holistic + saliency +
attention), writers, store and send, and the model-free total (all but the model and the
grouping wait).

``--scoring-processes 1,2 --backlog 8`` sends a backlog of copies of the exam (other study
UIDs) to a node with each ``scoring_processes`` setting and prints exams/min from the first
C-STORE to the last exam report at storescp (a many-core GPU machine: 1,4,8).

``--worker-batch 1,4,8 --backlog 8`` times READY -> stored outputs in process with the node's
own Ingestor, Grouper and Worker (no DICOM peer: the run for a GPU machine, which has no
dcmtk): seconds per worker pass and per exam, exams/s, per batch size.

``--batch 1,4,8`` then scores copies of the exam in process with the node's own scorer
(``EnsembleScorer.score_exams``, the worker's batch path) on ``--device``, and prints per batch
size the model time per exam and exams/s (``--no-node`` skips the end-to-end run).

    python scripts/bench_pipeline.py [--device cpu|cuda] [--precision bf16 fp32] [--repeats 1]
        [--arch resnet101] [--size 976] [--batch 1,4,8] [--no-node]
        [--scoring-processes 1,2 --backlog 8] [--worker-batch 1,4,8]
        [--node-env MAMMO_SC_MAX_PIXELS=2000000 ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# as the node's worker does (mammo_node.ml.loading): spinning OpenMP waiters would burn CPU
# time on a busy machine and falsify the CPU-time figures
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = dict(os.environ, TCP_NODELAY="1")
CLI = str(Path(sys.executable).parent / "mammo-node")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_bundle(folder: Path, arch: str, size: int) -> Path:
    import torch

    from mammo_node.ml.bundle import BundleManifest, save_bundle
    from mammo_node.ml.models import build_model
    from mammo_node.ml.preprocess import PreprocessSettings

    bundle = folder / f"{arch}-{size}"
    if (bundle / "manifest.json").is_file():
        return bundle
    torch.manual_seed(0)
    holistic = build_model(arch=arch)
    attention = build_model(arch=arch)
    attention.load_state_dict(holistic.state_dict())
    save_bundle(
        bundle,
        holistic=holistic,
        attention=attention,
        manifest=BundleManifest(
            name=f"bench-{arch}-random",
            version="0.0.0",
            architecture=arch,
            is_demo=True,
            preprocess=PreprocessSettings(input_size=size, roi_size=size, roi_scale=2.0),
        ),
    )
    return bundle


def make_exam(folder: Path) -> list[Path]:
    from mammo_node.synth import FULL_SIZE_LARGE, SynthOptions, generate_exams

    files = sorted(folder.glob("*.dcm"))
    if len(files) == 4:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rows, columns = FULL_SIZE_LARGE
    exam = next(
        iter(
            generate_exams(
                SynthOptions(
                    rows=rows,
                    columns=columns,
                    exams=1,
                    seed=3,
                    screening_fraction=1.0,
                    interval_fraction=0.0,
                )
            )
        )
    )
    for slot, ds in exam.datasets.items():
        ds.save_as(folder / f"{slot}.dcm", enforce_file_format=True)
    return sorted(folder.glob("*.dcm"))


def bare_model_seconds(arch: str, size: int, device: str, precision: str) -> float:
    """4 saliency passes + 4 attention forwards on random inputs, batch 1 (CPU) / 4 (GPU)."""
    import torch

    from mammo_node.ml.inference import resolve_device, resolve_precision
    from mammo_node.ml.models import build_model
    from mammo_node.ml.saliency import forward_scores, input_saliency

    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    channels_last = dtype is not None
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch=arch).to(dev, memory_format=memory).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    batch = 4 if dev.type == "cuda" else 1
    x = torch.randn(batch, 1, size, size, device=dev)

    def once() -> None:
        for _ in range(4 // batch):
            input_saliency(model, x, autocast_dtype=dtype, channels_last=channels_last)
            forward_scores(model, x, autocast_dtype=dtype, channels_last=channels_last)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    once()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@dataclass
class RunningNode:
    """A `mammo-node serve` with a storescp as its one destination, warmed up."""

    node: subprocess.Popen[bytes]
    scp: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    results_dir: Path

    def stop(self) -> None:
        for proc in (self.node, self.scp):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def start_node(
    work: Path, bundle: Path, device: str, precision: str, **settings: str
) -> RunningNode:
    """A fresh node (data in ``work``) with a storescp destination, after its warm-up exam;
    ``settings``: more MAMMO_* variables."""
    data = work / "node"
    results_dir = work / "storescp"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(results_dir, ignore_errors=True)
    results_dir.mkdir(parents=True)
    port, results_port = free_port(), free_port()
    env = dict(
        ENV,
        MAMMO_DATA_DIR=str(data),
        MAMMO_MODEL_BUNDLE=str(bundle),
        MAMMO_DEVICE=device,
        MAMMO_PRECISION=precision,
        MAMMO_QUIET_SECONDS="0",
        MAMMO_GROUPING_INTERVAL="0.05",
        MAMMO_WORKER_POLL_SECONDS="0.05",
        MAMMO_HOST="127.0.0.1",
        MAMMO_MIN_FREE_DISK_MB="0",
        MAMMO_PRIOR_AFTER_DAYS="0",  # synthetic exams are dated 2018-2021
        MAMMO_SHUTDOWN_GRACE_SECONDS="5",
        MAMMO_SCORING_WARM_UP="true",  # the first exam is timed warm, as on a GPU node
        **settings,
    )
    subprocess.run([CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [
            CLI,
            "destinations",
            "add",
            "results",
            "--ae-title",
            "RESULTS",
            "--host",
            "127.0.0.1",
            "--port",
            str(results_port),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    scp = subprocess.Popen(
        ["storescp", "-aet", "RESULTS", "-od", str(results_dir), str(results_port)],
        env=ENV,
        start_new_session=True,
    )
    log = (work / "node.log").open("wb")  # fresh: the warm-up line is looked for in it
    node = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--http-port", str(free_port())],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    running = RunningNode(node, scp, env, port, results_dir)
    try:
        deadline = time.monotonic() + 300
        while (
            subprocess.run(
                ["echoscu", "-aec", "MAMMO_NODE", "127.0.0.1", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError(f"node did not start; see {work / 'node.log'}")
            time.sleep(0.3)
        # each scoring process loads the model and runs its warm-up exam after the SCP is up
        log_path = work / "node.log"
        processes = int(settings.get("MAMMO_SCORING_PROCESSES", "1"))
        while (
            sum(
                log_path.read_text(errors="replace").count(word)
                for word in ("worker warmed up", "warm-up pass failed")
            )
            < processes
        ):
            if time.monotonic() > deadline + 600 or node.poll() is not None:
                raise RuntimeError(f"the worker did not warm up; see {log_path}")
            time.sleep(0.5)
    except BaseException:
        running.stop()
        raise
    return running


def exam_reports(results_dir: Path, seen: set[Path]) -> int:
    """Exam reports (the SR in series 9100) newly arrived at storescp's folder."""
    import pydicom

    found = 0
    for path in results_dir.glob("SR*"):
        if path in seen:
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # storescp is still writing it: look again
            continue
        seen.add(path)
        found += int(header.get("SeriesNumber", 0) or 0) == 9100
    return found


def run_once(
    work: Path, files: list[Path], bundle: Path, device: str, precision: str, **settings: str
) -> dict[str, Any]:
    running = start_node(work, bundle, device, precision, **settings)
    env, port, results_dir = running.env, running.port, running.results_dir
    try:
        subprocess.run(
            ["storescu", "-aec", "MAMMO_NODE", "127.0.0.1", str(port), *map(str, files)],
            env=ENV,
            check=True,
            capture_output=True,
        )
        sent_at = dt.datetime.now(dt.UTC)
        t_sent = time.perf_counter()
        import pydicom

        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        # watch storescp's folder only: polling the node (a CLI process per look) would take
        # a CPU core from the model
        seen: set[Path] = set()
        while not exam_reports(results_dir, seen):
            if time.perf_counter() - t_sent > 900:
                raise RuntimeError("no SR within 15 minutes")
            time.sleep(0.02)
        arrived = time.perf_counter() - t_sent
        detail = json.loads(
            subprocess.run(
                [CLI, "exams", "show", study, "--json"], env=env, capture_output=True, text=True
            ).stdout
        )
    finally:
        running.stop()
    result = detail["result"]
    timings = result["timings"]
    events = {e["to"]: iso(e["at"]) for e in detail["events"]}
    sr_delivery = next(
        d for d in result["deliveries"] if d["sop_instance_uid"] == result["sr_sop_instance_uid"]
    )
    created = iso(result["created_at"])
    model = timings["holistic_saliency"] + timings["attention"]
    stages = {
        "decode": timings["load"] + timings.get("read", 0.0),
        "preprocess": timings["preprocess"] + timings.get("postprocess", 0.0),
        "model": model,
        "writers": timings["writers"],
        "store": timings["store"],
        "send": (iso(sr_delivery["delivered_at"]) - created).total_seconds(),
    }
    return {
        "total": arrived,
        "grouping wait": (events["scoring"] - sent_at).total_seconds(),
        "stages": stages,
        "device": result["device"],
        "model": model,
    }


def exam_copies(folder: Path, files: list[Path], count: int) -> list[list[Path]]:
    """``count`` copies of the exam as other studies (new Study, Series and SOP Instance
    UIDs, accession numbers), written once under ``folder``."""
    import pydicom
    from pydicom.uid import generate_uid

    copies = []
    for i in range(count):
        target = folder / f"exam{i:03d}"
        if len(list(target.glob("*.dcm"))) != len(files):
            target.mkdir(parents=True, exist_ok=True)
            study = generate_uid()
            for f in files:
                ds = pydicom.dcmread(f)
                ds.StudyInstanceUID = study
                ds.SeriesInstanceUID = generate_uid()
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.AccessionNumber = f"BENCH{i:05d}"
                ds.save_as(target / f.name, enforce_file_format=True)
        copies.append(sorted(target.glob("*.dcm")))
    return copies


def node_throughput(
    work: Path,
    files: list[Path],
    bundle: Path,
    device: str,
    precision: str,
    processes: list[int],
    exams: int,
) -> None:
    """A backlog of ``exams`` full-size exams sent to a node with each ``scoring_processes``
    setting: time from the first C-STORE to the last exam report at storescp, exams/min."""
    copies = exam_copies(work / "backlog", files, exams)
    print(f"\nbacklog of {exams} exams through the node, {precision} on {device}:")
    print("  scoring processes  sent s  all results s  exams/min")
    for n in processes:
        running = start_node(
            work / f"procs{n}", bundle, device, precision, MAMMO_SCORING_PROCESSES=str(n)
        )
        try:
            t0 = time.perf_counter()
            subprocess.run(
                ["storescu", "-aec", "MAMMO_NODE", "127.0.0.1", str(running.port)]
                + [str(f) for exam in copies for f in exam],
                env=ENV,
                check=True,
                capture_output=True,
            )
            sent = time.perf_counter() - t0
            seen: set[Path] = set()
            arrived = 0
            while arrived < exams:
                if time.perf_counter() - t0 > 3600:
                    raise RuntimeError(f"{arrived} of {exams} exam reports within an hour")
                arrived += exam_reports(running.results_dir, seen)
                time.sleep(0.1)
            total = time.perf_counter() - t0
        finally:
            running.stop()
        print(f"  {n:17d}  {sent:6.1f}  {total:13.1f}  {60 * exams / total:9.2f}")


# the worker's recorded stages of one exam (Result.timings), in pipeline order
WORKER_STAGES = (
    "read",
    "load",
    "preprocess",
    "holistic_saliency",
    "attention",
    "postprocess",
    "writers",
    "store",
    "worker_total",
)


def worker_passes(
    work: Path,
    files: list[Path],
    bundle: Path,
    device: str,
    precision: str,
    batches: list[int],
    exams: int,
) -> None:
    """READY to stored outputs, in process with the node's own parts and no DICOM peer
    (a GPU machine has no dcmtk): ``exams`` copies of the exam filed through the Ingestor
    and grouped to READY on a fresh SQLite node, then the node's Worker claims, reads,
    scores, writes, stores and records them, ``batch`` exams per pass. Prints seconds per
    pass and per exam, and exams/s."""
    from sqlalchemy import select

    from mammo_node import heap
    from mammo_node.config import Settings
    from mammo_node.db.models import Result
    from mammo_node.db.session import Database, upgrade
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore
    from mammo_node.grouping.service import Grouper
    from mammo_node.ml.loading import load_scorer
    from mammo_node.worker import Worker, warm_up

    copies = exam_copies(work / "backlog", files, exams)
    splits: list[tuple[int, list[dict[str, float]]]] = []
    if Settings().worker_reuse_freed_memory:  # as the scoring process does
        heap.reuse_freed_memory()
    print(f"\nworker passes, {precision} on {device} ({exams} exams, READY -> stored outputs):")
    print("  batch  s/pass  s/exam  exams/s")
    for b in batches:
        data = work / f"worker-batch{b}"
        shutil.rmtree(data, ignore_errors=True)
        settings = Settings(
            data_dir=data,
            model_bundle=bundle,
            device=device,
            precision=precision,
            quiet_seconds=0,
            stable_seconds=0,
            min_free_disk_mb=0,
            prior_after_days=0,
            scoring_batch_size=b,
            scoring_warm_up=True,
        )
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        store = InstanceStore(settings.storage_dir)
        ingestor = Ingestor(settings, db, store)
        for exam in copies:
            for f in exam:
                temp = store.temp_path()
                shutil.copyfile(f, temp)
                ingestor.ingest_file(temp, source="dimse", calling_ae="BENCH", peer_host="-")
        grouper = Grouper(settings, db, store)
        while grouper.check_pending_pixels(limit=64) or grouper.decide_exams():
            pass
        worker = Worker(settings, db, ingestor, lambda s=settings: load_scorer(s))
        warm_up(worker)
        passes = []
        t0 = time.perf_counter()
        while True:
            t = time.perf_counter()
            if not worker.run_once():
                break
            passes.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
        with db.session() as session:
            recorded = [r.timings for r in session.scalars(select(Result))]
        db.dispose()
        scored = min(exams, b * len(passes))
        print(
            f"  {b:5d}  {statistics.median(passes):6.3f}  {total / max(1, scored):6.3f}"
            f"  {scored / total:7.2f}"
        )
        splits.append((b, recorded))
    # where each exam's time went, from the node's own records (median over the exams)
    stages = [s for s in WORKER_STAGES if any(s in t for _, r in splits for t in r)]
    print(
        "  batch  "
        + "  ".join(f"{s:>10s}" for s in stages)
        + "   (s, median over the exams; worker_total: from the pass's start)"
    )
    for b, recorded in splits:
        cells = [statistics.median(t.get(s, 0.0) for t in recorded) for s in stages]
        print(f"  {b:5d}  " + "  ".join(f"{c:10.4f}" for c in cells))


def batch_throughput(
    files: list[Path], bundle: Path, device: str, precision: str, batches: list[int], repeats: int
) -> None:
    """Copies of the exam through ``EnsembleScorer.score_exams`` per batch size: model time per
    exam (stage split, device synchronised at the stage ends) and exams/s (no extra syncs)."""
    import pydicom
    import torch

    from mammo_node.domain import Slot
    from mammo_node.ml.bundle import load_bundle
    from mammo_node.ml.inference import EnsembleScorer

    scorer = EnsembleScorer(load_bundle(bundle, device="cpu"), device=device, precision=precision)
    exam = {Slot.parse(f.stem): pydicom.dcmread(f) for f in files}
    study = str(next(iter(exam.values())).StudyInstanceUID)
    for ds in exam.values():
        _ = ds.pixel_array  # decoded once: the figures are the scorer's, not the decoder's

    def sync() -> None:
        if scorer.device.type == "cuda":
            torch.cuda.synchronize(scorer.device)

    print(f"\nbatched scoring, {precision} on {scorer.device} ({scorer.precision}):")
    print("  batch  model s/exam  preprocess s/exam  wall s/exam  exams/s")
    for b in batches:
        batch = [(exam, study)] * b
        scorer.score_exams(batch)  # warm-up at this batch size
        walls, models, preps = [], [], []
        for _ in range(repeats):
            scorer.sync_stages = True  # the stage split: the device waited for at each end
            outcomes = scorer.score_exams(batch)
            bad = [o for o in outcomes if isinstance(o, Exception)]
            if bad:
                raise bad[0]
            timings = [o.timings for o in outcomes]  # type: ignore[union-attr]
            models.append(sum(t["holistic_saliency"] + t["attention"] for t in timings) / b)
            preps.append(sum(t["preprocess"] + t.get("postprocess", 0) for t in timings) / b)
            scorer.sync_stages = False  # the throughput: no extra waits
            sync()
            t0 = time.perf_counter()
            scorer.score_exams(batch)
            sync()
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        print(
            f"  {b:5d}  {statistics.median(models):12.3f}  {statistics.median(preps):17.3f}"
            f"  {wall / b:11.3f}  {b / wall:7.2f}"
        )


SERIAL_WRITERS = "writers 1 thr"


def source_node(folder: Path, files: list[Path]) -> Any:
    """A SQLite node in ``folder`` holding the exam's images (filed as received): the store
    stage files the outputs into it as the worker does."""
    from mammo_node.config import Settings
    from mammo_node.db.session import Database, upgrade
    from mammo_node.filing.ingest import Ingestor
    from mammo_node.filing.storage import InstanceStore

    settings = Settings(data_dir=folder / "node", min_free_disk_mb=0)
    upgrade(settings.database_url)
    ingestor = Ingestor(
        settings, Database(settings.database_url), InstanceStore(settings.storage_dir)
    )
    for f in files:
        temp = ingestor.store.temp_path()
        shutil.copyfile(f, temp)
        ingestor.ingest_file(temp, source="dimse", calling_ae="BENCH", peer_host="-")
    return ingestor


def stage_costs(
    files: list[Path],
    bundle: Path,
    precision: str,
    repeats: int,
    writer_threads: int,
    fresh_pages: bool = False,
) -> None:
    """The model-free stages in this process, wall and CPU seconds (all threads): CPU time
    stays meaningful on a machine busy with other work. decode = read + decode the 4 files;
    preprocess = the scorer's prepare of each view + its saliency map onto the rescaled grid
    (what the scorer hands the writers); writers = build_outputs, serial and with the threads
    the worker gives it (the total counts the latter); store = the outputs written as Part-10
    and filed as the worker files them (``Ingestor.ingest_outputs`` on a SQLite node)."""
    import tempfile

    import numpy as np
    import pydicom
    import torch

    from mammo_node import heap
    from mammo_node.domain import Slot
    from mammo_node.ml.bundle import load_bundle
    from mammo_node.ml.inference import EnsembleScorer
    from mammo_node.worker import file_outputs
    from mammo_node.writers import build_outputs

    scorer = EnsembleScorer(load_bundle(bundle, device="cpu"), device="cpu", precision=precision)
    if not fresh_pages:  # as the scoring process does (MAMMO_WORKER_REUSE_FREED_MEMORY)
        heap.reuse_freed_memory()
    print(f"\nheap: {'fresh pages for every image' if fresh_pages else 'freed buffers reused'}")

    def read() -> dict[Slot, Any]:
        exam = {Slot.parse(f.stem): pydicom.dcmread(f) for f in files}
        for ds in exam.values():
            _ = ds.pixel_array
        return exam

    exam = read()
    study = str(next(iter(exam.values())).StudyInstanceUID)
    inference = scorer.score_exam(exam, study)  # not timed: the model is measured elsewhere
    build_outputs(exam, inference, revision=0)  # first call loads highdicom's dictionaries
    rng = np.random.default_rng(0)
    costs: dict[str, list[tuple[float, float]]] = {}

    def timed(stage: str, fn: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        costs.setdefault(stage, []).append((time.perf_counter() - w, time.process_time() - c))
        return out

    def preprocess(exam: dict[Slot, Any]) -> None:
        for slot, ds in exam.items():
            prepared = scorer.prepare(ds, slot)
            geometry = getattr(prepared, "geometry", None) or prepared.image.geometry
            smap = torch.from_numpy(rng.random(geometry.input_shape, dtype=np.float32))
            geometry.saliency_on_scaled_grid(smap)

    def store(outputs: list[Any], folder: Path) -> None:
        """As the worker files them (``worker.file_outputs``: Part-10 temp files, then
        ``Ingestor.ingest_outputs``: each file fsynced in place, each folder once, one index
        transaction) on a SQLite node that holds the source exam."""
        if not hasattr(store, "ingestor"):
            store.ingestor = source_node(folder, files)  # type: ignore[attr-defined]
        file_outputs(store.ingestor, outputs, calling_ae="BENCH")  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(1, max(1, repeats) + 1):  # each a new revision: new output UIDs
            exam = timed("decode", read)
            timed("preprocess", lambda exam=exam: preprocess(exam))
            if writer_threads > 1:  # the serial figure beside it, not in the total
                timed(
                    SERIAL_WRITERS,
                    lambda exam=exam, r=repeat: build_outputs(exam, inference, revision=r),
                )
            outputs = timed(
                f"writers {writer_threads} thr",
                lambda exam=exam, r=repeat: build_outputs(
                    exam, inference, revision=r, threads=writer_threads
                ),
            )
            timed("store", lambda outputs=outputs: store(outputs, Path(tmp)))
    print("\nmodel-free stages in process (median; CPU = all threads of this process):")
    wall_total = cpu_total = 0.0
    for stage, runs in costs.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        if stage != SERIAL_WRITERS or writer_threads == 1:
            wall_total, cpu_total = wall_total + wall, cpu_total + cpu
        print(f"  {stage:14s} wall {wall:7.3f} s   CPU {cpu:7.3f} s per exam")
    print(f"  total          wall {wall_total:7.3f} s   CPU {cpu_total:7.3f} s per exam (w/o send)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--arch", default="resnet101")
    parser.add_argument("--size", type=int, default=976)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "pipeline")
    parser.add_argument("--batch", default="", help="batch sizes for the throughput, e.g. 1,4,8")
    parser.add_argument("--no-node", action="store_true", help="skip the end-to-end node run")
    parser.add_argument(
        "--stages", action="store_true", help="also time the model-free stages in this process"
    )
    parser.add_argument(
        "--scoring-processes",
        default="",
        help="e.g. 1,2: a backlog of --backlog exams through a node with each setting",
    )
    parser.add_argument("--backlog", type=int, default=8, help="exams in the backlog run")
    parser.add_argument(
        "--worker-batch",
        default="",
        help="e.g. 1,4,8: READY -> stored outputs through the node's Worker in process "
        "(no DICOM peer needed: the GPU machine's run), --backlog exams",
    )
    parser.add_argument(
        "--node-env",
        nargs="*",
        default=[],
        metavar="MAMMO_VAR=VALUE",
        help="settings of the end-to-end node, e.g. MAMMO_SC_MAX_PIXELS=2000000",
    )
    parser.add_argument(
        "--fresh-pages",
        action="store_true",
        help="--stages without the scoring process's heap reuse (mammo_node.heap), to compare",
    )
    parser.add_argument(
        "--writer-threads",
        type=int,
        default=0,
        help="threads of the --stages writers (default: the worker's, MAMMO_WORKER_THREADS "
        "or the CPUs shared by the scoring processes)",
    )
    args = parser.parse_args()
    node_env = dict(item.split("=", 1) for item in args.node_env)
    if not args.writer_threads:
        from mammo_node.config import Settings
        from mammo_node.worker_process import ScoringPriority

        args.writer_threads = ScoringPriority.from_settings(Settings()).threads
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    processes = [int(n) for n in args.scoring_processes.split(",") if n.strip()]
    worker_batches = [int(n) for n in args.worker_batch.split(",") if n.strip()]
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None and not args.no_node:
            sys.exit(f"{tool} not found: install dcmtk (make apt)")
    args.out.mkdir(parents=True, exist_ok=True)
    files = make_exam(args.out / "exam")
    bundle = make_bundle(args.out / "bundles", args.arch, args.size)
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(
        f"exam: 4 x 4096x3328 16-bit ({mb:.0f} MB); model: {args.arch} @ {args.size}, "
        f"roi {args.size} at 2x; device {args.device}"
    )
    for precision in args.precision:
        if not args.no_node:
            runs = [
                run_once(args.out / "run", files, bundle, args.device, precision, **node_env)
                for _ in range(args.repeats)
            ]
            best = min(runs, key=lambda r: r["total"])
            bare = bare_model_seconds(args.arch, args.size, args.device, precision)
            print(
                f"\n{precision} on {best['device']}: C-STORE response -> SR at storescp "
                f"{best['total']:.2f} s (best of {len(runs)}; grouping wait "
                f"{best['grouping wait']:.2f} s)"
            )
            for stage, seconds in best["stages"].items():
                print(f"  {stage:12s} {seconds:7.3f} s per exam")
            free = sum(v for k, v in best["stages"].items() if k != "model")
            print(f"  model-free total {free:.3f} s per exam (target <= 0.5 s on CPU)")
            print(
                f"  model time {best['model']:.2f} s vs bare forward/backward {bare:.2f} s: "
                f"ratio {best['model'] / bare:.2f} (target <= 1.3 on CPU)"
            )
        if args.stages:
            stage_costs(
                files,
                bundle,
                precision,
                max(1, args.repeats),
                args.writer_threads,
                args.fresh_pages,
            )
        if batches:
            batch_throughput(files, bundle, args.device, precision, batches, max(1, args.repeats))
        if worker_batches:
            worker_passes(
                args.out / "worker",
                files,
                bundle,
                args.device,
                precision,
                worker_batches,
                args.backlog,
            )
        if processes:
            node_throughput(
                args.out / "throughput",
                files,
                bundle,
                args.device,
                precision,
                processes,
                args.backlog,
            )


if __name__ == "__main__":
    main()
