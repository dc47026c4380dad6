"""Saliency, the centre of attention and the ROI cut around it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mammo_node.ml.models import build_model
from mammo_node.ml.preprocess import PreprocessSettings, preprocess
from mammo_node.ml.roi import cut_roi, window_origin
from mammo_node.ml.saliency import centre_of_attention, input_saliency, risk_scores, smooth
from tests.helpers.mg import breast_phantom, plant_spot


class BrightSpotNet(nn.Module):
    """A real conv net whose positive logit is a soft maximum of local (5x5) brightness.

    Its input gradient is concentrated where the image is locally brightest, so the
    saliency of an image with one bright spot should point at the spot.
    """

    def __init__(self, sharpness: float = 200.0) -> None:
        super().__init__()
        self.blur = nn.Conv2d(1, 1, kernel_size=5, padding=2, bias=False)
        nn.init.constant_(self.blur.weight, 1.0 / 25)
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.blur(x).flatten(1)
        positive = torch.logsumexp(self.sharpness * local, dim=1) / self.sharpness
        return torch.stack([torch.zeros_like(positive), positive], dim=1)


def spot_image(x: float, y: float, size: int = 64, seed: int = 0) -> torch.Tensor:
    image = breast_phantom(size, size, seed=seed)
    plant_spot(image, x, y, radius=2.0, value=1.0)
    return torch.from_numpy(image)[None, None]


def test_coa_lands_on_a_planted_bright_spot_per_image_in_a_batch() -> None:
    model = BrightSpotNet().eval()
    spots = [(20.5, 30.5), (40.5, 40.5), (10.5, 50.5)]
    batch = torch.cat([spot_image(x, y, seed=i) for i, (x, y) in enumerate(spots)])
    result = input_saliency(model, batch)
    for (x, y), coa in zip(spots, result.coa, strict=True):
        assert abs(float(coa[0]) - x) < 2.0 and abs(float(coa[1]) - y) < 2.0
    # Same answer image by image: one backward of the summed logits is per-image exact.
    single = input_saliency(model, batch[1:2])
    assert torch.allclose(single.saliency[0], result.saliency[1], atol=1e-7)
    assert torch.allclose(single.scores[0], result.scores[1])


def test_saliency_leaves_parameters_untouched() -> None:
    model = build_model(arch="resnet18").eval()
    model.fc.weight.requires_grad_(False)  # a flag set by the caller must survive
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    result = input_saliency(model, torch.randn(2, 1, 64, 64))
    assert result.saliency.shape == (2, 64, 64) and result.scores.shape == (2,)
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    with pytest.raises(ValueError, match="eval mode"):
        input_saliency(model.train(), torch.randn(1, 1, 64, 64))


def test_risk_score_is_logit_difference() -> None:
    logits = torch.tensor([[1.0, 3.5], [2.0, -1.0]])
    assert torch.allclose(risk_scores(logits), torch.tensor([2.5, -3.0]))


def test_coa_is_centroid_of_top_one_percent() -> None:
    sal = torch.zeros(1, 100, 100)
    sal[0, 10:20, 40:50] = 5.0  # exactly 100 pixels = 1 % of 10 000
    sal[0, 80, 80] = 1.0  # below the cut
    coa = centre_of_attention(sal)
    assert torch.allclose(coa, torch.tensor([[45.0, 15.0]]))


def test_roi_is_centred_on_the_coa_and_clamped_inside_the_image() -> None:
    settings = PreprocessSettings(input_size=100, roi_size=32, roi_scale=2.0)
    display = breast_phantom(160, 100)[:, ::-1].copy()  # a right breast as stored
    plant_spot(display, 30.5, 70.5, radius=2.0)
    prepared = preprocess(display, laterality="R", settings=settings)
    geom = prepared.geometry
    assert prepared.hires is not None and geom.hires_shape == (320, 200)
    coa_model = geom.to_model(30.5, 70.5)
    roi = cut_roi(prepared.hires, geom, coa_model, roi_size=32)
    assert roi.coa_stored == pytest.approx((30.5, 70.5))
    x0, y0, x1, y1 = roi.stored_box
    # 32 hires pixels = 16 stored pixels; the box covers every stored pixel it touches.
    assert 16 <= x1 - x0 <= 17 and 16 <= y1 - y0 <= 17
    assert x0 <= 30.5 < x1 and y0 <= 70.5 < y1
    # The spot is the brightest part of the crop, near its centre.
    idx = int(np.argmax(roi.crop.numpy()))
    assert abs(idx // 32 - 16) <= 2 and abs(idx % 32 - 16) <= 2
    # Near a corner the window is pushed inside the image, never outside.
    corner = cut_roi(prepared.hires, geom, geom.to_model(1.0, 1.0), roi_size=32)
    assert corner.stored_box == (0, 0, 16, 16)  # mirrored: stored x=1 is hires x=198
    assert window_origin(5.0, 20, 32) == 0  # smaller than the window: starts at 0, padded


def test_smoothing_keeps_the_coa_on_a_finding_amid_pixel_speckle() -> None:
    rng = torch.Generator().manual_seed(0)
    sal = torch.rand(1, 128, 128, generator=rng) ** 8  # sparse speckle over the whole map
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    sal[0] += 0.8 * torch.exp(-((xx + 0.5 - 30.5) ** 2 + (yy + 0.5 - 90.5) ** 2) / (2 * 5.0**2))
    raw = centre_of_attention(sal)[0]
    smoothed = centre_of_attention(smooth(sal, 2.0))[0]
    assert torch.dist(smoothed, torch.tensor([30.5, 90.5])) < 2.0
    assert torch.dist(raw, torch.tensor([30.5, 90.5])) > torch.dist(
        smoothed, torch.tensor([30.5, 90.5])
    )
    assert torch.equal(smooth(sal, 0.0), sal)
    with pytest.raises(ValueError, match='"smoothing" should be >= 0'):
        smooth(sal, -1.0)


def test_breast_region_coa_finds_the_blob_that_the_paper_centroid_misses() -> None:
    from mammo_node.ml.saliency import (
        breast_mask,
        region_centre_of_attention,
        region_centres,
        smooth,
    )

    rows, cols = 96, 80
    yy, xx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    inside = (xx / (0.8 * cols)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2 <= 1
    image = torch.where(inside, torch.tensor(0.5), torch.tensor(-2.0))[None]  # normalised
    generator = torch.Generator().manual_seed(0)
    saliency = torch.rand((1, rows, cols), generator=generator) * 0.2
    lesion = (40.5, 30.5)
    saliency += 1.0 * torch.exp(
        -((xx + 0.5 - lesion[0]) ** 2 + (yy + 0.5 - lesion[1]) ** 2) / (2 * 3.0**2)
    )
    # bright speckle all over the breast and a strong skin-line edge outside it
    for _ in range(60):
        y, x = torch.randint(0, rows, (2,), generator=generator).tolist()
        saliency[0, y, x % cols] = 1.5
    outside = (~inside).float()[None, None]
    skin = inside & (torch.nn.functional.max_pool2d(outside, 5, 1, 2)[0, 0] > 0)
    saliency[0][skin] = 2.0  # the skin line
    saliency[0, :, :2] = 2.0  # the chest-wall edge
    mask = breast_mask(image)
    assert not mask[0][~inside].any() and mask[0].sum() < inside.sum()
    assert not mask[0][:, :2].any()  # the chest-wall band
    paper = centre_of_attention(saliency)[0]
    region = region_centre_of_attention(smooth(saliency, 1.0), mask)[0]
    assert math.dist(region.tolist(), lesion) < 3.0
    assert math.dist(paper.tolist(), lesion) > 8.0
    # the strongest regions, strongest first
    top3 = region_centres(smooth(saliency, 1.0), mask, keep=3)[0]
    assert len(top3) == 3 and top3[0] == pytest.approx(tuple(region.tolist()))
    # by its peak the chest-wall edge's blur just inside the band wins: why "sum" is the rule
    peak = region_centres(smooth(saliency, 1.0), mask, by="peak")[0][0]
    assert peak[0] < 5.0 and math.dist(peak, lesion) > 8.0
    with pytest.raises(ValueError, match='"by" should be'):
        region_centres(saliency, mask, by="mean")


class SpotBlockNet(nn.Module):
    """BrightSpotNet with a named last block (``layer4``, stride 2) for Grad-CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(1, 1, kernel_size=5, stride=2, padding=2, bias=False)
        nn.init.constant_(self.layer4.weight, 1.0 / 25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = torch.relu(self.layer4(x)).flatten(1)
        positive = torch.logsumexp(50.0 * local, dim=1) / 50.0
        return torch.stack([torch.zeros_like(positive), positive], dim=1)


def test_smoothgrad_and_grad_cam_point_at_the_spot() -> None:
    from mammo_node.ml.saliency import (
        breast_mask,
        grad_cam,
        input_gradient,
        smoothed_maximum,
        smoothgrad,
    )

    spots = [(20.5, 30.5), (44.5, 40.5)]
    batch = torch.cat([spot_image(x, y, seed=i) for i, (x, y) in enumerate(spots)])
    model = BrightSpotNet().eval()
    sg = smoothgrad(model, batch, samples=6, noise=0.05)
    assert torch.equal(sg, smoothgrad(model, batch, samples=6, noise=0.05))  # seeded noise
    assert torch.allclose(
        smoothgrad(model, batch, samples=1, noise=0.0), input_gradient(model, batch)
    )
    cam = grad_cam(SpotBlockNet().eval(), batch)
    assert cam.shape == (2, 64, 64) and bool((cam >= 0).all())
    mask = breast_mask(batch[:, 0])
    for saliency in (sg, cam):
        for (x, y), coa in zip(spots, smoothed_maximum(saliency, mask), strict=True):
            assert math.dist((x, y), coa.tolist()) < 3.0
    with pytest.raises(ValueError, match='"layer" should name a block'):
        grad_cam(model, batch)
