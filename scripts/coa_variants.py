"""How well each centre-of-attention rule localises, on the held-out images of a CV run.

    python scripts/coa_variants.py RUN_DIR [--json]

For every fold the fold's holistic model (RUN_DIR/fold_XX/holistic.safetensors) computes the
input-gradient saliency of its held-out positive images that have lesion truth; each rule
then picks a COA on the same map, and the figures are: COA inside the lesion, lesion centre
inside the ROI (roi_size at roi_scale around the COA), overall and for small lesions
(radius <= the median). Variants:

- ``paper``: centroid of the top 1 % of the raw map (Dahl et al.);
- ``paper_smoothed``: the same after a Gaussian of sigma 2 input px;
- ``breast_region``: the trainer's default (top 1 % inside the breast away from skin line
  and chest wall, sigma max(1, --saliency-smoothing), centre of the strongest region);
- ``smoothed_max``: the maximum of the sigma-2 smoothed map inside the breast.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from mammo_node.ml.models import build_model
from mammo_node.ml.preprocess import eval_tensor
from mammo_node.ml.roi import roi_origin, stored_box
from mammo_node.ml.saliency import (
    breast_mask,
    centre_of_attention,
    input_saliency,
    region_centre_of_attention,
    smooth,
)
from trainer.cache import ImageCache
from trainer.config import TrainConfig
from trainer.data import Manifest, image_label

VARIANTS = ("paper", "paper_smoothed", "breast_region", "smoothed_max")


def coas(raw: torch.Tensor, images: torch.Tensor, sigma: float) -> dict[str, torch.Tensor]:
    mask = breast_mask(images[:, 0])
    smoothed2 = smooth(raw, 2.0)
    region = smooth(raw, max(1.0, sigma))
    masked = torch.where(mask, smoothed2, torch.full_like(smoothed2, -1.0))
    flat = masked.reshape(len(raw), -1).argmax(dim=1)
    w = raw.shape[2]
    argmax = torch.stack([(flat % w).float() + 0.5, (flat // w).float() + 0.5], dim=1)
    return {
        "paper": centre_of_attention(raw),
        "paper_smoothed": centre_of_attention(smoothed2),
        "breast_region": region_centre_of_attention(region, mask),
        "smoothed_max": argmax,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run = json.loads((args.run_dir / "run.json").read_text())
    cfg = TrainConfig.from_dict(run["config"])
    manifest = Manifest.load(Path(run["manifest"]))
    folds = json.loads((args.run_dir / "folds.json").read_text())
    cache = ImageCache(args.run_dir / "cache", cfg.preprocess)
    cache.read_index()
    settings = cfg.preprocess
    hits: dict[str, list[tuple[float, bool, bool]]] = {v: [] for v in VARIANTS}
    for k in range(cfg.folds):
        weights = args.run_dir / f"fold_{k:02d}" / "holistic.safetensors"
        if not weights.is_file():
            continue  # a fold not trained yet
        model = build_model(arch=cfg.arch)
        model.load_state_dict(load_file(str(weights)))
        model.eval()
        todo = [
            (image, manifest.truth[image.sop_instance_uid])
            for exam in manifest.exams
            if folds.get(exam.study_uid) == k
            for slot, image in sorted(exam.images.items())
            if image_label(exam, slot) and image.sop_instance_uid in manifest.truth
        ]
        for start in range(0, len(todo), 16):
            part = todo[start : start + 16]
            images = torch.stack(
                [eval_tensor(cache.scaled(i.sop_instance_uid), settings) for i, _ in part]
            )
            raw = input_saliency(model, images).saliency  # sigma 0: the raw |gradient|
            found = coas(raw, images, cfg.saliency_smoothing)
            for variant, points in found.items():
                for (image, lesion), point in zip(part, points.tolist(), strict=True):
                    geometry = cache.geometries[image.sop_instance_uid]
                    stored = geometry.to_stored(point[0], point[1])
                    origin = roi_origin(geometry, stored, cfg.roi_size)
                    x0, y0, x1, y1 = stored_box(geometry, origin, cfg.roi_size)
                    hits[variant].append(
                        (
                            lesion.radius,
                            math.dist(stored, (lesion.x, lesion.y)) <= lesion.radius,
                            x0 <= lesion.x < x1 and y0 <= lesion.y < y1,
                        )
                    )
    cut = float(np.median([r for r, _, _ in hits["paper"]]))
    out = {}
    for variant, found in hits.items():
        small = [h for h in found if h[0] <= cut]
        out[variant] = {
            "n": len(found),
            "coa_in_lesion": float(np.mean([h[1] for h in found])),
            "lesion_in_roi": float(np.mean([h[2] for h in found])),
            "small_n": len(small),
            "small_coa_in_lesion": float(np.mean([h[1] for h in small])),
            "small_lesion_in_roi": float(np.mean([h[2] for h in small])),
        }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print("| COA rule | COA in lesion | lesion in ROI | small: COA in lesion | small: in ROI |")
    print("|---|---|---|---|---|")
    for variant, r in out.items():
        print(
            f"| {variant} | {r['coa_in_lesion']:.1%} | {r['lesion_in_roi']:.1%} | "
            f"{r['small_coa_in_lesion']:.1%} | {r['small_lesion_in_roi']:.1%} |"
        )
    print(
        f"\n{out['paper']['n']} positive held-out images; small = radius <= {cut:.1f} px "
        f"({out['paper']['small_n']} images)."
    )


if __name__ == "__main__":
    main()
