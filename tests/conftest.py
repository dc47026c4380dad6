"""Shared fixtures: real databases (SQLite file, PostgreSQL on 127.0.0.1:5432), a real node
on a free port, the real files in ../shared/realdata, and dcmtk as the modality."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.environment import PG_ADMIN_URL, SHARED, pg_database
from tests.helpers.node_process import NodeProcess
from tests.helpers.tools import free_port


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


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend; tests run migrations from empty."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.db'}"
        return
    request.applymarker(pytest.mark.postgres)
    yield from pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    yield from pg_database(pg_server)


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
            # as in NodeProcess: the scoring process at the tests' own priority
            "worker_nice": 0,
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
    from tests.helpers.orthanc import Orthanc

    pacs = Orthanc(tmp_path / "orthanc", free_port(), free_port()).start()
    yield pacs
    pacs.stop()


# --- the trainer ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny synthetic screening cohort for the trainer's CLI and DDP tests, in root/data.

    TORCH_HOME points at root/torch_home, which holds torchvision-layout ResNet-18 ImageNet
    weights (so the default ``--init imagenet`` works with nothing downloaded).
    """
    from mammo_node.synth import SynthOptions, write_synthetic_dataset
    from tests.helpers.trainer import one_torch_thread, write_torchvision_weights

    root = tmp_path_factory.mktemp("cohort")
    write_torchvision_weights(root / "torch_home")
    write_synthetic_dataset(
        root / "data",
        SynthOptions(
            rows=96,
            columns=80,
            exams=12,
            seed=5,
            screening_fraction=0.35,
            interval_fraction=0.15,
            lesion_radius_mm=(8.0, 12.0),
        ),
    )
    with pytest.MonkeyPatch.context() as patch, one_torch_thread():
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        yield root


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch intra-op thread for a module's tiny models (see one_torch_thread)."""
    from tests.helpers.trainer import one_torch_thread

    with one_torch_thread():
        yield
