"""Model bundle: a directory with manifest.json, holistic.safetensors, attention.safetensors.

The manifest records what the models are (architecture, preprocessing settings, version),
how they were made (training data summary, cross-validated AUCs, operating points), what
their exam score means (an optional ``calibration``: probability, 1-10 category, operating
points fitted for these very weights; bundles without one still load) and the sha256 of
each weights file. Loading checks every hash before reading a tensor and reads
weights with safetensors only: a bundle from elsewhere cannot run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydicom.uid import generate_uid
from torch import nn

from mammo_node.domain import BundleInfo, OperatingPoint
from mammo_node.errors import ModelError
from mammo_node.ml.calibration import Calibration
from mammo_node.ml.models import ARCHITECTURES, build_model
from mammo_node.ml.preprocess import PreprocessSettings

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ROLES = ("holistic", "attention")
FORMAT = "mammo-node-bundle/1"
SCORE_KINDS = ("logit_difference", "probability")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_bundle_path() -> Path:
    """The demo bundle shipped inside the package (synthetic data, not for clinical use)."""
    return Path(__file__).resolve().parent.parent / "demo_bundle"


@dataclass(frozen=True)
class BundleManifest:
    name: str
    version: str
    architecture: str
    preprocess: PreprocessSettings
    is_demo: bool
    score_kind: str = "logit_difference"
    operating_points: tuple[OperatingPoint, ...] = ()
    cv_aucs: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> file, sha256
    device_uid: str = ""
    created: str = ""
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        for name in ("name", "version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f'Argument "{name}" should be a non-empty string, got {value!r}.')
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f'Argument "architecture" should be one of {sorted(ARCHITECTURES)}, '
                f"got {self.architecture!r}."
            )
        if self.score_kind not in SCORE_KINDS:
            raise ValueError(
                f'Argument "score_kind" should be one of {SCORE_KINDS}, got {self.score_kind!r}.'
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "input_size": self.preprocess.input_size,
            "roi_size": self.preprocess.roi_size,
            "roi_scale": self.preprocess.roi_scale,
            "preprocess": self.preprocess.to_dict(),
            "is_demo": self.is_demo,
            "score_kind": self.score_kind,
            "operating_points": [
                {
                    "name": p.name,
                    "threshold": p.threshold,
                    "sensitivity": p.sensitivity,
                    "specificity": p.specificity,
                }
                for p in self.operating_points
            ],
            "cv_aucs": self.cv_aucs,
            "training": self.training,
            "weights": self.weights,
            "device_uid": self.device_uid,
            "created": self.created,
            **({"calibration": self.calibration.to_json()} if self.calibration else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BundleManifest:
        if data.get("format") != FORMAT:
            raise ValueError(f'manifest "format" should be {FORMAT!r}, got {data.get("format")!r}.')
        points = tuple(
            OperatingPoint(
                name=str(p["name"]),
                threshold=float(p["threshold"]),
                sensitivity=p.get("sensitivity"),
                specificity=p.get("specificity"),
            )
            for p in data.get("operating_points", [])
        )
        return cls(
            name=data["name"],
            version=data["version"],
            architecture=data["architecture"],
            preprocess=PreprocessSettings.from_dict(dict(data["preprocess"])),
            is_demo=bool(data["is_demo"]),
            score_kind=data.get("score_kind", "logit_difference"),
            operating_points=points,
            cv_aucs=dict(data.get("cv_aucs", {})),
            training=dict(data.get("training", {})),
            weights={k: dict(v) for k, v in data.get("weights", {}).items()},
            device_uid=str(data.get("device_uid", "")),
            created=str(data.get("created", "")),
            calibration=(
                Calibration.from_json(data["calibration"]) if data.get("calibration") else None
            ),
        )


@dataclass
class LoadedBundle:
    path: Path
    manifest: BundleManifest
    holistic: nn.Module
    attention: nn.Module
    manifest_sha256: str

    @property
    def calibration(self) -> Calibration | None:
        """What the exam score means for these weights (None: an uncalibrated bundle)."""
        return self.manifest.calibration

    @property
    def info(self) -> BundleInfo:
        m = self.manifest
        return BundleInfo(
            name=m.name,
            version=m.version,
            architecture=m.architecture,
            is_demo=m.is_demo,
            score_kind=m.score_kind,
            device_uid=m.device_uid,
            operating_points=m.operating_points,
            manifest_sha256=self.manifest_sha256,
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _state_of(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _atomic_write_weights(
    path: Path, state: Mapping[str, torch.Tensor], dtype: torch.dtype, metadata: dict[str, str]
) -> None:
    from safetensors.torch import save_file

    tensors = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state.items()
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a bundle is read by the node's user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_bundle(
    out_dir: Path,
    *,
    holistic: nn.Module | Mapping[str, torch.Tensor],
    attention: nn.Module | Mapping[str, torch.Tensor],
    manifest: BundleManifest,
    storage_dtype: str = "float32",
) -> BundleManifest:
    """Write the weights (``storage_dtype``: float32, float16 or bfloat16) and the manifest.

    Returns the manifest as written (with sha256s, device UID and creation time filled in).
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f'Argument "storage_dtype" should be one of {sorted(STORAGE_DTYPES)}, '
            f"got {storage_dtype!r}."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights: dict[str, dict[str, str]] = {}
    for role, model in (("holistic", holistic), ("attention", attention)):
        path = out_dir / f"{role}.safetensors"
        meta = {"role": role, "architecture": manifest.architecture, "bundle": manifest.name}
        _atomic_write_weights(path, _state_of(model), STORAGE_DTYPES[storage_dtype], meta)
        weights[role] = {"file": path.name, "sha256": sha256_file(path), "dtype": storage_dtype}
    device_uid = generate_uid(
        entropy_srcs=[manifest.name, manifest.version] + [w["sha256"] for w in weights.values()]
    )
    written = dataclasses.replace(
        manifest,
        weights=weights,
        device_uid=str(device_uid),
        created=manifest.created or datetime.now(UTC).isoformat(timespec="seconds"),
    )
    text = json.dumps(written.to_json(), indent=2, sort_keys=False) + "\n"
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST)
    logger.info("Wrote bundle %s %s to %s", written.name, written.version, out_dir)
    return written


def rewrite_manifest(path: Path, manifest: BundleManifest) -> BundleManifest:
    """Replace a bundle's manifest (e.g. with a new calibration), weights untouched.

    Refuses a manifest whose weights entries differ from the bundle's own: the calibration
    belongs to those weights.
    """
    current, _ = read_manifest(path)
    if manifest.weights != current.weights:
        raise ModelError(f'Model bundle "{path}": the new manifest lists other weights.')
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    tmp = Path(path) / f".{MANIFEST}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, Path(path) / MANIFEST)
    return manifest


def read_manifest(path: Path) -> tuple[BundleManifest, str]:
    """The manifest of a bundle directory and the sha256 of its bytes."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise ModelError(f'Model bundle "{path}" has no {MANIFEST}; is this a bundle directory?')
    raw = file.read_bytes()
    try:
        manifest = BundleManifest.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f'Model bundle "{path}": {MANIFEST} is invalid: {exc}') from exc
    return manifest, hashlib.sha256(raw).hexdigest()


def load_bundle(path: Path, *, device: str | torch.device = "cpu") -> LoadedBundle:
    """Verify and load a bundle; models come back in eval mode, float32, on ``device``.

    Refuses (ModelError) a missing file, a weights file whose sha256 differs from the
    manifest, or tensors that do not fit the manifest's architecture.
    """
    from safetensors.torch import load_file

    path = Path(path)
    manifest, manifest_sha = read_manifest(path)
    models: dict[str, nn.Module] = {}
    for role in ROLES:
        entry = manifest.weights.get(role)
        if not entry or "file" not in entry or "sha256" not in entry:
            raise ModelError(
                f'Model bundle "{path}": manifest lists no {role} weights with sha256.'
            )
        file = path / entry["file"]
        if file.name != entry["file"] or not file.is_file():
            raise ModelError(f'Model bundle "{path}": weights file {entry["file"]!r} is missing.')
        actual = sha256_file(file)
        if actual != entry["sha256"]:
            raise ModelError(
                f'Model bundle "{path}": {file.name} has sha256 {actual}, the manifest says '
                f"{entry['sha256']}; the file was changed or replaced. Refusing to load it."
            )
        try:
            state = load_file(str(file))
            model = build_model(arch=manifest.architecture)
            own = model.state_dict()
            model.load_state_dict(
                {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}, strict=True
            )
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelError(
                f'Model bundle "{path}": {file.name} does not fit {manifest.architecture}: {exc}'
            ) from exc
        models[role] = model.to(device).eval()
    return LoadedBundle(
        path=path,
        manifest=manifest,
        holistic=models["holistic"],
        attention=models["attention"],
        manifest_sha256=manifest_sha,
    )
