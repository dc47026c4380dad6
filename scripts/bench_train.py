"""Training throughput: images/s of the holistic and attention stages, and the loader's share.

    python scripts/bench_train.py                       # tiny, CPU: ResNet-18 @ 128, ROI 64
    python scripts/bench_train.py --paper --device cuda # ResNet-101 @ 976, ROI 976, batch 4
    python scripts/bench_train.py --arch resnet101 --input-size 976 --batch-size 32 ...

The trainer's own parts: ``TrainImages`` (the paper's augmentation from 16-bit cached images,
as ``trainer.cache`` stores them), the DataLoader settings of ``trainer.engine``
(``loader_options``: pinned memory, persistent workers), Adam, bf16 autocast and
channels-last on CUDA. Images are synthetic phantoms kept in memory (the disk is not
measured). "loader share" = time the step loop waited for the next batch / wall time; 0 %
means the GPU (or CPU) never waited on data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mammo_node.ml.inference import resolve_device
from mammo_node.ml.models import build_model
from trainer.cache import from_uint16, to_uint16
from trainer.config import TrainConfig
from trainer.distributed import DistInfo
from trainer.engine import BalancedDraw, Sample, TrainImages, _collate, loader_options


def phantom(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = (xx / (0.85 * cols)) ** 2 + ((yy - rows / 2) / (0.47 * rows)) ** 2 <= 1
    image = np.where(inside, 0.45 + 0.08 * rng.standard_normal((rows, cols)), 0.0)
    return to_uint16(np.clip(image, 0, 1))


class Images:
    """sop -> float32 image, decoded from 16-bit like the run's cache."""

    def __init__(self, n: int, rows: int, cols: int) -> None:
        self.arrays = {f"s{i}": phantom(rows, cols, i) for i in range(n)}

    def __call__(self, sop: str) -> np.ndarray:
        return from_uint16(self.arrays[sop])


def bench_stage(
    name: str, size: int, source_shape: tuple[int, int], cfg: TrainConfig, args: argparse.Namespace
) -> dict[str, float | str]:
    device = resolve_device(args.device)
    info = DistInfo(0, 1, 0, device)
    n_images = max(16, args.batch_size * 4)
    images = Images(n_images, *source_shape)
    samples = [Sample(f"s{i}", i % 2) for i in range(n_images)]
    dataset = TrainImages(
        samples,
        images,
        size=size,
        settings=cfg.preprocess,
        augmentation=cfg.augmentation,
        seed=0,
    )
    sampler = BalancedDraw([s.label for s in samples], positive_fraction=0.5, seed=0, info=info)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        collate_fn=_collate,
        **loader_options(cfg, device),  # type: ignore[arg-type]
    )
    model = build_model(arch=args.arch)
    cuda = device.type == "cuda"
    memory = torch.channels_last if cuda else torch.contiguous_format
    model.to(device, memory_format=memory).train()
    if cuda:
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    amp = cuda if args.amp is None else args.amp
    steps = args.warmup + args.steps
    done = waited = 0.0
    step = 0
    t_start = time.perf_counter()
    epoch = 0
    while step < steps:
        sampler.epoch = epoch
        epoch += 1
        it = iter(loader)
        while step < steps:
            t0 = time.perf_counter()
            try:
                batch, labels = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            batch = batch.to(device, memory_format=memory, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(batch)
            loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cuda and step in (args.warmup - 1, steps - 1):
                torch.cuda.synchronize(device)
            step += 1
            if step == args.warmup:
                t_start, waited, done = time.perf_counter(), 0.0, 0.0
            elif step > args.warmup:
                waited += t1 - t0
                done += len(labels)
    wall = time.perf_counter() - t_start
    return {
        "stage": name,
        "images_per_s": done / wall,
        "loader_share": waited / wall,
        "images": done,
        "input": f"{size}x{size}",
        "source": f"{source_shape[0]}x{source_shape[1]}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="ResNet-101, 976 px, ROI 976, batch 4")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--roi-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: sized to the CPUs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if args.paper:
        args.arch, args.input_size, args.roi_size, args.batch_size = "resnet101", 976, 976, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        arch=args.arch,
        input_size=args.input_size,
        roi_size=args.roi_size,
        batch_size=args.batch_size,
        workers=args.workers,
        init="scratch",
    )
    rows = round(args.input_size * 1.25)  # a mammogram is taller than wide
    results = [
        bench_stage("holistic", args.input_size, (rows, args.input_size), cfg, args),
        # the attention model trains on cached ROI crops of exactly roi_size
        bench_stage("attention", args.roi_size, (args.roi_size, args.roi_size), cfg, args),
    ]
    device = resolve_device(args.device)
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "arch": args.arch,
        "batch_size": args.batch_size,
        "workers": loader_options(cfg, device)["num_workers"],
        "results": results,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"{out['device']}, {args.arch}, batch {args.batch_size}, {out['workers']} workers",
        file=sys.stderr,
    )
    for r in results:
        print(
            f"{r['stage']:9s} {r['input']:>9s}: {r['images_per_s']:8.1f} images/s, "
            f"loader share {r['loader_share']:.0%}"
        )


if __name__ == "__main__":
    main()
