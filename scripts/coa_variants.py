"""How well each centre-of-attention rule localises, on the held-out images of a CV run.

    python scripts/coa_variants.py RUN_DIR [--folds 0,1,2] [--json]

For every fold the fold's holistic model (RUN_DIR/fold_XX/holistic.safetensors, a fixed
saved model: each comparison costs only the maps) computes maps of its held-out positive
images that have lesion truth; each rule then picks a COA on a map, and the figures are:
COA inside the lesion, lesion centre inside the ROI (roi_size at roi_scale around the COA),
overall and for small lesions (radius <= the median). A rule is MAP + PICK.

Maps (``mammo_node.ml.saliency``):
- ``grad``: |input gradient| of the positive logit (Simonyan et al., the paper); ``grad_sN``:
  the same blurred by a Gaussian of sigma N input px;
- ``smoothgrad``: SmoothGrad, mean |gradient| over 8 noisy copies (noise 0.15 of the range);
  ``smoothgrad_s2`` blurred by sigma 2;
- ``gradcam4`` / ``gradcam3``: Grad-CAM on the last block (layer4) / on layer3, upsampled;

Picks:
- ``centroid``: centroid of the top 1 % of the whole map (the paper's rule);
- ``region``: top 1 % inside the breast (away from skin line and chest wall), centre of the
  connected region with the largest sum (``grad_s1`` + ``region`` is ``breast_region``);
- ``region_peak``: the same, the region with the largest pixel; ``region_0.5pct`` /
  ``region_2pct``: the top 0.5 % / 2 % instead of 1 %;
- ``max``: the map's largest pixel inside the breast;
- ``oracle_top3``: not a rule: a hit when any of the 3 strongest regions is on the lesion
  (what a rule that re-ranks the holistic map's candidates could reach at best).
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
    grad_cam,
    input_gradient,
    region_centres,
    smooth,
    smoothed_maximum,
    smoothgrad,
)
from trainer.cache import ImageCache
from trainer.config import TrainConfig
from trainer.data import Manifest, image_label

MAPS = (
    "grad",
    "grad_s1",
    "grad_s2",
    "grad_s4",
    "smoothgrad",
    "smoothgrad_s2",
    "gradcam4",
    "gradcam3",
)
PICKS = ("centroid", "region", "region_peak", "region_0.5pct", "region_2pct", "max", "oracle_top3")


def maps(
    model: torch.nn.Module, images: torch.Tensor, wanted: list[str]
) -> dict[str, torch.Tensor]:
    cache: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        if name not in cache:
            cache[name] = make[name]()
        return cache[name]

    make = {
        "grad": lambda: input_gradient(model, images),
        "grad_s1": lambda: smooth(get("grad"), 1.0),
        "grad_s2": lambda: smooth(get("grad"), 2.0),
        "grad_s4": lambda: smooth(get("grad"), 4.0),
        "smoothgrad": lambda: smoothgrad(model, images),
        "smoothgrad_s2": lambda: smooth(get("smoothgrad"), 2.0),
        "gradcam4": lambda: grad_cam(model, images, layer="layer4"),
        "gradcam3": lambda: grad_cam(model, images, layer="layer3"),
    }
    return {name: get(name) for name in wanted}


def picks(saliency: torch.Tensor, mask: torch.Tensor) -> dict[str, list[list[list[float]]]]:
    """Rule -> per image its candidate COAs (one, except the top-3 oracle)."""

    def one(points: torch.Tensor) -> list[list[list[float]]]:
        return [[p] for p in points.tolist()]

    def regions(**kw: object) -> list[list[list[float]]]:
        return [[list(c) for c in found] for found in region_centres(saliency, mask, **kw)]

    return {
        "centroid": one(centre_of_attention(saliency)),
        "region": regions(),
        "region_peak": regions(by="peak"),
        "region_0.5pct": regions(top_fraction=0.005),
        "region_2pct": regions(top_fraction=0.02),
        "max": one(smoothed_maximum(saliency, mask)),
        "oracle_top3": regions(keep=3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--folds", default="", help="comma-separated folds (default: all)")
    parser.add_argument("--maps", default="", help="comma-separated maps (default: all)")
    args = parser.parse_args()
    run = json.loads((args.run_dir / "run.json").read_text())
    cfg = TrainConfig.from_dict(run["config"])
    manifest = Manifest.load(Path(run["manifest"]))
    folds = json.loads((args.run_dir / "folds.json").read_text())
    cache = ImageCache(args.run_dir / "cache", cfg.preprocess)
    cache.read_index()
    settings = cfg.preprocess
    wanted = args.maps.split(",") if args.maps else list(MAPS)
    rules = [f"{m}+{p}" for m in wanted for p in PICKS]
    hits: dict[str, list[tuple[float, bool, bool]]] = {v: [] for v in rules}
    chosen = [int(k) for k in args.folds.split(",")] if args.folds else range(cfg.folds)
    for k in chosen:
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
            mask = breast_mask(images[:, 0])
            found = {
                f"{name}+{pick}": points
                for name, saliency in maps(model, images, wanted).items()
                for pick, points in picks(saliency, mask).items()
            }
            for variant, points in found.items():
                for (image, lesion), candidates in zip(part, points, strict=True):
                    geometry = cache.geometries[image.sop_instance_uid]
                    inside = in_roi = False
                    for point in candidates:
                        stored = geometry.to_stored(point[0], point[1])
                        origin = roi_origin(geometry, stored, cfg.roi_size)
                        x0, y0, x1, y1 = stored_box(geometry, origin, cfg.roi_size)
                        inside |= math.dist(stored, (lesion.x, lesion.y)) <= lesion.radius
                        in_roi |= x0 <= lesion.x < x1 and y0 <= lesion.y < y1
                    hits[variant].append((lesion.radius, inside, in_roi))
    cut = float(np.median([r for r, _, _ in hits[rules[0]]]))
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
        f"\n{out[rules[0]]['n']} positive held-out images; small = radius <= {cut:.1f} px "
        f"({out[rules[0]]['small_n']} images)."
    )


if __name__ == "__main__":
    main()
