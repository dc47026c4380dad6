"""Model compute benchmark: seconds per image, FLOPs, GFLOP/s, and bf16-vs-fp32 agreement.

    python scripts/bench_model.py [--device cpu|cuda|auto] [--arch resnet101] [--size 976]
                                  [--batches 1,4] [--repeats 2] [--json out.json]

1. ResNet (random weights, 1-channel stem, 2 outputs) at size x size: holistic forward with
   saliency (input gradient, parameters frozen) and attention forward, fp32 and bf16 autocast
   + channels-last, batch 1 and 4: median seconds per image, FLOPs per image
   (torch.utils.flop_counter) and GFLOP/s achieved.
2. How far bf16 moves scores and COAs from fp32 on the same images:
   a) the demo bundle (or --bundle) through EnsembleScorer on synthetic exams;
   b) the random ResNet at size x size on synthetic mammograms.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.flop_counter import FlopCounterMode

from mammo_node.domain import SLOTS
from mammo_node.ml.bundle import default_bundle_path, load_bundle
from mammo_node.ml.inference import EnsembleScorer, resolve_device
from mammo_node.ml.models import build_model
from mammo_node.ml.preprocess import PreprocessSettings, preprocess
from mammo_node.ml.saliency import forward_scores, frozen_parameters, input_saliency
from mammo_node.synth import SynthOptions, generate_exams

PRECISIONS = {"fp32": None, "bf16-cl": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocations, oneDNN / cuDNN plans
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(model: torch.nn.Module, size: int, device: torch.device) -> tuple[float, float]:
    """(forward, forward + input gradient) FLOPs for one image, in fp32."""
    x = torch.randn(1, 1, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    forward = counter.get_total_flops()
    x.requires_grad_(True)
    # the same work as input_saliency (which uses autograd.grad, not traceable by the counter)
    with FlopCounterMode(display=False) as counter, frozen_parameters(model):
        model(x)[:, 1].sum().backward()
    return float(forward), float(counter.get_total_flops())


def compute_table(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(arch=args.arch).to(device).eval()
    flops_fwd, flops_sal = count_flops(model, args.size, device)
    print(
        f"{args.arch} @ {args.size}: {flops_fwd / 1e9:.0f} GFLOP forward, "
        f"{flops_sal / 1e9:.0f} GFLOP forward + input gradient",
        flush=True,
    )
    rows = []
    for name, dtype in PRECISIONS.items():
        memory = torch.channels_last if dtype is not None else torch.contiguous_format
        model = model.to(memory_format=memory)
        for batch in args.batches:
            x = torch.randn(batch, 1, args.size, args.size, device=device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            channels_last = dtype is not None
            sal = (
                timed(
                    partial(
                        input_saliency, model, x, autocast_dtype=dtype, channels_last=channels_last
                    ),
                    device,
                    args.repeats,
                )
                / batch
            )
            fwd = (
                timed(
                    partial(
                        forward_scores, model, x, autocast_dtype=dtype, channels_last=channels_last
                    ),
                    device,
                    args.repeats,
                )
                / batch
            )
            row = {
                "precision": name,
                "batch": batch,
                "holistic_saliency_s_per_image": sal,
                "attention_forward_s_per_image": fwd,
                "saliency_gflops_per_s": flops_sal / sal / 1e9,
                "forward_gflops_per_s": flops_fwd / fwd / 1e9,
                "exam_s": 4 * (sal + fwd),
            }
            if device.type == "cuda":
                row["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
            rows.append(row)
            print(
                f"  {name:8s} batch {batch}: saliency {sal:.3f} s/img "
                f"({row['saliency_gflops_per_s']:.0f} GFLOP/s), forward {fwd:.3f} s/img "
                f"({row['forward_gflops_per_s']:.0f} GFLOP/s), "
                f"exam (4 saliency + 4 forward) {row['exam_s']:.1f} s",
                flush=True,
            )
    return {
        "arch": args.arch,
        "size": args.size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "gflop_forward": flops_fwd / 1e9,
        "gflop_forward_plus_input_gradient": flops_sal / 1e9,
        "rows": rows,
    }


def synthetic_exams(n: int, rows: int, columns: int, seed: int) -> list[Any]:
    options = SynthOptions(
        rows=rows,
        columns=columns,
        exams=n,
        seed=seed,
        screening_fraction=0.5,
        interval_fraction=0.0,
    )
    return list(generate_exams(options))


def bundle_agreement(bundle_path: Path, device: torch.device, n_exams: int) -> dict[str, Any]:
    """fp32 vs bf16 EnsembleScorer on the same synthetic exams (stored-grid COAs)."""
    bundle = load_bundle(bundle_path, device="cpu")
    exams = synthetic_exams(n_exams, 512, 416, seed=123)
    results: dict[str, list[Any]] = {}
    for precision in ("fp32", "bf16"):
        scorer = EnsembleScorer(
            load_bundle(bundle_path, device="cpu"), device=str(device), precision=precision
        )
        results[precision] = [scorer.score_exam(e.datasets, e.study_uid) for e in exams]
    d_h, d_a, d_e, d_coa, spread, exam_a, exam_b = [], [], [], [], [], [], []
    for a, b in zip(results["fp32"], results["bf16"], strict=True):
        exam_a.append(a.scores.exam_score)
        exam_b.append(b.scores.exam_score)
        for slot in SLOTS:
            va, vb = a.views[slot], b.views[slot]
            d_h.append(abs(va.holistic - vb.holistic))
            d_a.append(abs(va.attention - vb.attention))
            d_e.append(abs(va.ensemble - vb.ensemble))
            d_coa.append(math.dist(va.coa, vb.coa))
            spread.append(va.ensemble)
    return {
        "bundle": bundle.manifest.name,
        "images": len(d_h),
        "image_size": [512, 416],
        "score_std_fp32": float(np.std(spread)),
        "max_abs_diff": {"holistic": max(d_h), "attention": max(d_a), "ensemble": max(d_e)},
        "mean_abs_diff": {
            "holistic": float(np.mean(d_h)),
            "attention": float(np.mean(d_a)),
            "ensemble": float(np.mean(d_e)),
        },
        "coa_shift_px": {"median": float(np.median(d_coa)), "max": max(d_coa)},
        "exam_score_spearman": float(spearmanr(exam_a, exam_b).statistic),
        "verdict_flips": sum(
            a.verdicts != b.verdicts for a, b in zip(results["fp32"], results["bf16"], strict=True)
        ),
    }


def random_model_agreement(
    args: argparse.Namespace, device: torch.device, n: int
) -> dict[str, Any]:
    """fp32 vs bf16 with the random ResNet at full size on synthetic mammograms."""
    torch.manual_seed(0)
    model = build_model(arch=args.arch).to(device).eval()
    settings = PreprocessSettings(input_size=args.size, roi_size=args.size)
    exam = synthetic_exams(1, 1280, 1040, seed=7)[0]
    tensors = [
        preprocess(
            exam.datasets[s], laterality=s.laterality, settings=settings, with_hires=False
        ).tensor
        for s in SLOTS[:n]
    ]
    x = torch.stack(tensors).to(device)
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = model.to(memory_format=torch.channels_last if dtype else torch.contiguous_format)
        out[name] = input_saliency(model, x, autocast_dtype=dtype, channels_last=dtype is not None)
    ds = (out["fp32"].scores - out["bf16"].scores).abs()
    coa = (out["fp32"].coa - out["bf16"].coa).norm(dim=1)
    return {
        "images": n,
        "scores_fp32": out["fp32"].scores.tolist(),
        "scores_bf16": out["bf16"].scores.tolist(),
        "max_abs_score_diff": float(ds.max()),
        "coa_shift_model_px": coa.tolist(),
        "coa_shift_fraction_of_width": (coa / args.size).tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="resnet101")
    parser.add_argument("--size", type=int, default=976)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--agreement-exams", type=int, default=6)
    parser.add_argument("--agreement-images", type=int, default=4)
    parser.add_argument("--skip-compute", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}",
        flush=True,
    )
    report: dict[str, Any] = {"device_name": name}
    if not args.skip_compute:
        report["compute"] = compute_table(args, device)
    if (args.bundle / "manifest.json").is_file():
        report["bf16_vs_fp32_bundle"] = bundle_agreement(args.bundle, device, args.agreement_exams)
        print("bf16 vs fp32, bundle:", json.dumps(report["bf16_vs_fp32_bundle"]), flush=True)
    else:
        print(f"no bundle at {args.bundle}: skipping the bundle agreement check", flush=True)
    report["bf16_vs_fp32_random"] = random_model_agreement(args, device, args.agreement_images)
    print(
        f"bf16 vs fp32, random {args.arch} @ {args.size}:",
        json.dumps(report["bf16_vs_fp32_random"]),
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
