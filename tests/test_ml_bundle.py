"""Model bundle: save/load round trip, sha256 verification, refusal of tampered bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mammo_node.domain import OperatingPoint
from mammo_node.errors import ModelError
from mammo_node.ml.bundle import (
    BundleManifest,
    default_bundle_path,
    load_bundle,
    save_bundle,
)
from mammo_node.ml.models import build_model
from mammo_node.ml.preprocess import PreprocessSettings


def manifest(**overrides: object) -> BundleManifest:
    fields: dict[str, object] = dict(
        name="test-bundle",
        version="0.0.1",
        architecture="resnet18",
        preprocess=PreprocessSettings(input_size=64, roi_size=32, roi_scale=2.0),
        is_demo=True,
        operating_points=(OperatingPoint("sensitivity_90", 1.25, 0.9, 0.7),),
        cv_aucs={"ensemble": {"screening": 0.9}},
        training={"exams": 3},
    )
    fields.update(overrides)
    return BundleManifest(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build_model(arch="resnet18"), build_model(arch="resnet18")


@pytest.fixture()
def bundle_dir(tmp_path: Path, models: tuple[torch.nn.Module, torch.nn.Module]) -> Path:
    save_bundle(tmp_path / "b", holistic=models[0], attention=models[1], manifest=manifest())
    return tmp_path / "b"


def test_save_and_load_round_trip(bundle_dir: Path, models: tuple[torch.nn.Module, ...]) -> None:
    loaded = load_bundle(bundle_dir, device="cpu")
    for mine, theirs in zip(models, (loaded.holistic, loaded.attention), strict=True):
        for (k, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    assert not loaded.holistic.training
    info = loaded.info
    assert (info.name, info.version, info.architecture, info.is_demo) == (
        "test-bundle",
        "0.0.1",
        "resnet18",
        True,
    )
    assert info.score_kind == "logit_difference"
    assert info.operating_points == (OperatingPoint("sensitivity_90", 1.25, 0.9, 0.7),)
    assert (
        info.device_uid.startswith("1.2.826.0.1.3680043.8.498.") and len(info.manifest_sha256) == 64
    )
    data = json.loads((bundle_dir / "manifest.json").read_text())
    assert data["input_size"] == 64 and data["roi_size"] == 32 and data["roi_scale"] == 2.0
    assert set(data["weights"]) == {"holistic", "attention"}
    assert loaded.manifest.preprocess == PreprocessSettings(
        input_size=64, roi_size=32, roi_scale=2.0
    )


def test_a_changed_weights_file_is_refused(bundle_dir: Path) -> None:
    target = bundle_dir / "attention.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-10] ^= 0x01  # one bit in one weight
    target.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"attention\.safetensors has sha256 .* Refusing"):
        load_bundle(bundle_dir)


def test_swapped_or_missing_files_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    swapped = tmp_path / "swapped"
    shutil.copytree(bundle_dir, swapped)
    (swapped / "holistic.safetensors").rename(swapped / "tmp")
    (swapped / "attention.safetensors").rename(swapped / "holistic.safetensors")
    (swapped / "tmp").rename(swapped / "attention.safetensors")
    with pytest.raises(ModelError, match="sha256"):
        load_bundle(swapped)
    (bundle_dir / "holistic.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_bundle(bundle_dir)
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        load_bundle(tmp_path / "nothing-here")


def test_a_manifest_claiming_another_architecture_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["architecture"] = "resnet34"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="does not fit resnet34"):
        load_bundle(bundle_dir)
    data["architecture"] = "alexnet"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="architecture"):
        load_bundle(bundle_dir)


def test_half_precision_storage_is_half_the_size_and_loads_as_float32(
    tmp_path: Path, models: tuple[torch.nn.Module, torch.nn.Module]
) -> None:
    save_bundle(
        tmp_path / "fp16",
        holistic=models[0],
        attention=models[1],
        manifest=manifest(),
        storage_dtype="float16",
    )
    save_bundle(tmp_path / "fp32", holistic=models[0], attention=models[1], manifest=manifest())
    small = (tmp_path / "fp16" / "holistic.safetensors").stat().st_size
    big = (tmp_path / "fp32" / "holistic.safetensors").stat().st_size
    assert 0.45 < small / big < 0.55
    loaded = load_bundle(tmp_path / "fp16")
    weight = loaded.holistic.layer1[0].conv1.weight
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, models[0].layer1[0].conv1.weight, rtol=1e-3, atol=1e-4)


def test_default_bundle_path_is_inside_the_package() -> None:
    path = default_bundle_path()
    assert path.name == "demo_bundle" and path.parent.name == "mammo_node"


def test_manifest_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match='"score_kind" should be one of'):
        manifest(score_kind="percent")
    with pytest.raises(ValueError, match='"name" should be a non-empty string'):
        manifest(name=" ")
