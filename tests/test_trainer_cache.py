"""The run's image cache: 16-bit, at the holistic width only, filled incrementally."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mammo_node.synth import SynthOptions, write_synthetic_dataset
from trainer.cache import ImageCache, RoiCache, prepare_image
from trainer.config import TrainConfig
from trainer.data import index_dataset
from trainer.distributed import DistInfo
from trainer.progress import Reporter

pytestmark = pytest.mark.usefixtures("single_thread")

SINGLE = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


class Counting(Reporter):
    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.prepared = 0

    def advance(self, task: int | None, steps: int = 1, **stats: float | str | None) -> None:
        self.prepared += steps


def test_cache_is_16_bit_resumes_where_it_stopped_and_cuts_rois(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic_dataset(data, SynthOptions(rows=96, columns=80, exams=3, seed=2))
    manifest = index_dataset(data, labels_csv=data / "labels.csv")
    settings = TrainConfig(input_size=32, roi_size=24, roi_scale=2.0).preprocess
    cache = ImageCache(tmp_path / "cache", settings)
    first = Counting()
    cache.build(manifest, SINGLE, first)
    images = [i for e in manifest.exams for i in e.images.values()]
    assert first.prepared == len(images) == 12
    files = sorted(cache.root.glob("*.npy"))
    assert len(files) == 12
    stored = np.load(files[0], allow_pickle=False)
    assert stored.dtype == np.uint16 and stored.shape[1] == 32  # the holistic width only
    image = images[0]
    expected = prepare_image(manifest, image, settings, with_hires=False).scaled
    assert np.abs(cache.scaled(image.sop_instance_uid) - expected).max() <= 1 / 65535

    # interrupted: the last image's line was cut short and another image's file is gone
    log = next(cache.root.glob("progress.rank0.jsonl"))
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    cache._path(images[3].sop_instance_uid).unlink()
    again, resumed = Counting(), ImageCache(tmp_path / "cache", settings)
    resumed.build(manifest, SINGLE, again)
    assert again.prepared == 2 and len(resumed.geometries) == 12

    # ROI crops: only the attention model's window, cut from the hires image
    origins = {i.sop_instance_uid: (5, 7) for i in images}
    rois = RoiCache(tmp_path / "rois", 24)
    rois.build(manifest, images, origins, settings, SINGLE, Reporter(enabled=False))
    prepared = prepare_image(manifest, image, settings, with_hires=True)
    assert prepared.hires is not None
    crop = rois.crop(image.sop_instance_uid)
    assert crop.shape == (24, 24)
    assert np.abs(crop - prepared.hires[7:31, 5:29]).max() <= 1 / 65535
    rois.remove(SINGLE)
    assert not rois.root.exists()
