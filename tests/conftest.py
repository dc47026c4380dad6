"""Shared fixtures: real databases (SQLite file, PostgreSQL on 127.0.0.1:5432), a real node
on a free port, the real files in ../shared/realdata, and dcmtk as the modality."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    """The project's shared folder (real data, tools): MAMMO_SHARED, else ../shared beside the
    repository (the layout the project documents), else the workplace's /work/shared."""
    if os.environ.get("MAMMO_SHARED"):
        return Path(os.environ["MAMMO_SHARED"])
    for candidate in (REPO.parent / "shared", Path("/work/shared")):
        if (candidate / "realdata").is_dir():
            return candidate
    return REPO.parent / "shared"


SHARED = _shared_dir()
PG_ADMIN_URL = os.environ.get("MAMMO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# --- markers -----------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run full-size tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    opt_in = pytest.mark.skip(reason="full-size test: opt in with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords and "viewer" not in item.keywords:
            item.add_marker(opt_in)


# --- helpers -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} not installed: `make test` installs dcmtk (apt)")
    return path


def storescu(
    port: int, files: list[Path], *flags: str, aet: str = "MODALITY", aec: str = "MAMMO_NODE"
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [
            dcmtk("storescu"),
            "-aet",
            aet,
            "-aec",
            aec,
            *flags,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="session")
def realdata() -> Path:
    root = Path(os.environ.get("MAMMO_REALDATA", SHARED / "realdata"))
    if not (root / "README.md").is_file():
        raise AssertionError(
            f"real test data not found at {root}; set MAMMO_SHARED to the project's shared "
            "folder (../shared) or MAMMO_REALDATA to its realdata"
        )
    return root


# --- databases ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server the machine runs; a missing server fails the test loudly."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise AssertionError(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}") from exc
    finally:
        engine.dispose()
    return PG_ADMIN_URL


def _pg_database(admin_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"mammo_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend; tests run migrations from empty."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.db'}"
        return
    request.applymarker(pytest.mark.postgres)
    yield from _pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    yield from _pg_database(pg_server)


# --- a running node ----------------------------------------------------------------------
@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start real in-process nodes (SCP + grouping) on free ports; stopped at teardown."""
    from mammo_node.config import Settings
    from mammo_node.node import Node

    started: list[Any] = []

    def start(db_url: str | None = None, *, score: bool = False, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"node{len(started)}",
            "port": free_port(),
            "http_port": free_port(),
            "host": "127.0.0.1",
            "quiet_seconds": 0.5,
            "stable_seconds": 3.0,
            "grouping_interval": 0.1,
            "min_free_disk_mb": 0,
            # the synthetic and real test data carry historical study dates; the tests of
            # the prior rule set their own window
            "prior_after_days": 0,
        }
        if db_url:
            values["db_url"] = db_url
        values.update(overrides)
        node = Node(Settings(**values), score=score)
        node.start()
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        node.stop()


# --- a node in its own process (for kill -9 and CLI tests) --------------------------------
class NodeProcess:
    """`mammo-node serve` as a real child process."""

    def __init__(self, data_dir: Path, *, db_url: str | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.db_url = db_url
        self.env = {
            **os.environ,
            "MAMMO_QUIET_SECONDS": "0.5",
            "MAMMO_STABLE_SECONDS": "3",
            "MAMMO_GROUPING_INTERVAL": "0.1",
            "MAMMO_MIN_FREE_DISK_MB": "0",
            "MAMMO_PRIOR_AFTER_DAYS": "0",  # test data carries historical study dates
            "MAMMO_HOST": "127.0.0.1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def cli(
        self, *args: str, check: bool = True, data: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `mammo-node ARGS` (with this node's --data-dir / --db-url when ``data``)."""
        extra = ["--data-dir", str(self.data_dir)] if data else []
        if data and self.db_url:
            extra += ["--db-url", self.db_url]
        run = subprocess.run(
            [str(Path(os.sys.executable).parent / "mammo-node"), *args, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )
        if check and run.returncode != 0:
            raise AssertionError(f"mammo-node {' '.join(args)} failed:\n{run.stderr}")
        return run

    def start(self) -> NodeProcess:
        extra = ["--db-url", self.db_url] if self.db_url else []
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(os.sys.executable).parent / "mammo-node"),
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    "--http-port",
                    str(self.http_port),
                    "--ae-title",
                    "MAMMO_NODE",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        wait_for(self._answers_echo, timeout=90, interval=0.3)
        return self

    def _answers_echo(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"node exited with {self.proc.returncode}:\n{self.log.read_text()}"
            )
        run = subprocess.run(
            [dcmtk("echoscu"), "-to", "2", "-aec", "MAMMO_NODE", "127.0.0.1", str(self.port)],
            capture_output=True,
            timeout=30,
        )
        return run.returncode == 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(timeout=60)


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def make(data_dir: Path | None = None, **kwargs: Any) -> NodeProcess:
        node = NodeProcess(data_dir or tmp_path / "data", **kwargs)
        started.append(node)
        return node

    yield make
    for node in started:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()


# --- models and exams for scoring tests ----------------------------------------------------
@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle of small ResNet-18s (seeded random weights, 64 px input): the whole
    scoring path runs for real in seconds; its scores mean nothing and say so (is_demo)."""
    import torch

    from mammo_node.ml.bundle import BundleManifest, save_bundle
    from mammo_node.ml.models import build_model
    from mammo_node.ml.preprocess import PreprocessSettings

    torch.manual_seed(0)
    holistic = build_model(arch="resnet18")
    attention = build_model(arch="resnet18")
    attention.load_state_dict(holistic.state_dict())
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    manifest = BundleManifest(
        name="mammo-node-test-random",
        version="0.0.1",
        architecture="resnet18",
        preprocess=PreprocessSettings(input_size=64, roi_size=48, roi_scale=1.5),
        is_demo=True,
    )
    save_bundle(out, holistic=holistic, attention=attention, manifest=manifest)
    return out


@pytest.fixture(scope="session")
def synth_exams(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Three small synthetic screening exams (one screening cancer), written as Part-10."""
    from mammo_node.synth import SynthOptions, generate_exams

    exams = list(
        generate_exams(
            SynthOptions(rows=256, columns=208, exams=3, seed=11, repeat_patient_fraction=0.0)
        )
    )
    folder = tmp_path_factory.mktemp("synth")
    for exam in exams:
        exam.files = []
        for slot, ds in exam.datasets.items():
            path = folder / exam.study_uid / f"{slot}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            exam.files.append(path)
    return exams


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Any]:
    from tests.orthanc import Orthanc

    pacs = Orthanc(tmp_path / "orthanc", free_port(), free_port()).start()
    yield pacs
    pacs.stop()
