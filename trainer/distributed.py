"""torchrun / DistributedDataParallel plumbing: NCCL on GPUs, gloo on CPU.

Launched with ``torchrun --nproc_per_node N -m trainer.cli cv ...`` every process reads the
same run directory; rank 0 writes shared files, the others wait at barriers. Without
torchrun's environment the run is a single process and every helper is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mammo_node.ml.inference import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("rank %d/%d joined (%s, %s)", rank, world, backend, resolved)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=resolved)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sum over ranks (identity when single-process)."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if info.device.type == "cuda":
        tensor = tensor.to(info.device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_gather_objects(info: DistInfo, value: object) -> list[object]:
    """Every rank's ``value`` in rank order (``[value]`` when single-process)."""
    if not info.enabled:
        return [value]
    out: list[object] = [None] * info.world
    dist.all_gather_object(out, value)
    return out
