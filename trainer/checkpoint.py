"""Checkpoints as dicts of model / optimizer / scheduler / epoch / args, without pickle.

Tensors go to ``<stem>.safetensors``; everything else (epoch, args, optimizer hyper-parameters,
scheduler state) to ``<stem>.json`` together with the tensor file's sha256. Both are written to
temporary names and renamed, JSON last, so an interruption leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainer.errors import RunError

_SEP = "/"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _paths(stem: Path) -> tuple[Path, Path]:
    return stem.with_name(f"{stem.name}.safetensors"), stem.with_name(f"{stem.name}.json")


def _split_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer{_SEP}{pid}{_SEP}{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    stem: Path,
    *,
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    epoch: int,
    args: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``stem``.safetensors and ``stem``.json atomically."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    st_path, json_path = _paths(stem)
    opt_tensors, opt_rest = _split_optimizer(optimizer)
    tensors = {f"model{_SEP}{k}": v for k, v in model.items()} | opt_tensors
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp_st, tmp_json = (
        st_path.with_name(f".{st_path.name}.tmp"),
        json_path.with_name(f".{json_path.name}.tmp"),
    )
    save_file(tensors, str(tmp_st))
    meta = {
        "epoch": epoch,
        "args": dict(args),
        "optimizer": opt_rest,
        "lr_scheduler": dict(scheduler),
        "extra": dict(extra or {}),
        "tensors_sha256": _sha256(tmp_st),
    }
    tmp_json.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp_st, st_path)
    os.replace(tmp_json, json_path)


def load_checkpoint(stem: Path) -> dict[str, Any] | None:
    """The checkpoint dict (model, optimizer, lr_scheduler, epoch, args, extra), or None."""
    st_path, json_path = _paths(stem)
    if not json_path.is_file() or not st_path.is_file():
        return None
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    if _sha256(st_path) != meta.get("tensors_sha256"):
        raise RunError(
            f'Checkpoint "{st_path}" does not match its {json_path.name} (interrupted '
            "while writing?). Delete both files to restart this stage."
        )
    tensors = load_file(str(st_path))
    model = {k.split(_SEP, 1)[1]: v for k, v in tensors.items() if k.startswith(f"model{_SEP}")}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(f"optimizer{_SEP}"):
            _, pid, name = key.split(_SEP, 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {
        "model": model,
        "optimizer": {"state": state, "param_groups": meta["optimizer"]["param_groups"]},
        "lr_scheduler": meta["lr_scheduler"],
        "epoch": int(meta["epoch"]),
        "args": meta["args"],
        "extra": meta.get("extra", {}),
    }
