"""Decoded, oriented and rescaled images, computed once per run and reused by every fold.

Per image two float16 arrays (``numpy.save``, read back memory-mapped without pickle): the
image at the model's input width (all rows, so training can crop at random) and at the ROI
("hires") width. The geometry of each image is kept so coordinates map back to stored pixels.
With several processes each rank prepares its share; rank 0 merges the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from mammo_node.errors import MammoNodeError
from mammo_node.ml.preprocess import Geometry, PreparedImage, PreprocessSettings, preprocess
from trainer.data import ImageRecord, Manifest
from trainer.distributed import DistInfo, barrier
from trainer.progress import Reporter

logger = logging.getLogger(__name__)


def _key(sop: str) -> str:
    return hashlib.sha1(sop.encode()).hexdigest()


def prepare_image(
    manifest: Manifest, image: ImageRecord, settings: PreprocessSettings
) -> PreparedImage:
    """The same preprocessing the node applies, from a DICOM or PNG file."""
    path = manifest.image_path(image)
    if image.source == "png":
        with Image.open(path) as im:
            pixels = np.asarray(im)
        if pixels.ndim != 2:
            raise MammoNodeError(f'"{path}" is not a greyscale image (shape {pixels.shape}).')
        return preprocess(pixels, laterality=image.slot.laterality, settings=settings)
    ds = pydicom.dcmread(path)
    return preprocess(ds, laterality=image.slot.laterality, settings=settings)


class ImageCache:
    def __init__(self, root: Path, settings: PreprocessSettings) -> None:
        self.root = Path(root)
        self.settings = settings
        self.geometries: dict[str, Geometry] = {}
        self.failed: dict[str, str] = {}

    def _paths(self, sop: str) -> tuple[Path, Path]:
        key = _key(sop)
        return self.root / f"{key}.scaled.npy", self.root / f"{key}.hires.npy"

    def scaled(self, sop: str) -> np.ndarray:
        return np.load(self._paths(sop)[0], mmap_mode="r", allow_pickle=False)

    def hires(self, sop: str) -> np.ndarray:
        return np.load(self._paths(sop)[1], mmap_mode="r", allow_pickle=False)

    def _key(self) -> dict[str, object]:
        """The settings that shape the cached pixels (not the saliency smoothing)."""
        return {k: v for k, v in self.settings.to_dict().items() if k != "saliency_smoothing"}

    def _load_index(self) -> bool:
        index = self.root / "index.json"
        if not index.is_file():
            return False
        data = json.loads(index.read_text())
        if data.get("settings") != self._key():
            return False
        self.geometries = {k: Geometry.from_dict(v) for k, v in data["geometries"].items()}
        self.failed = dict(data["failed"])
        return True

    def build(self, manifest: Manifest, info: DistInfo, reporter: Reporter) -> None:
        """Prepare every image of the manifest not yet cached (sharded over ranks)."""
        self.root.mkdir(parents=True, exist_ok=True)
        images = [i for e in manifest.exams for i in e.images.values()]
        if self._load_index() and all(
            i.sop_instance_uid in self.geometries or i.sop_instance_uid in self.failed
            for i in images
        ):
            return
        mine = images[info.rank :: info.world]
        geometries: dict[str, dict] = {}
        failed: dict[str, str] = {}
        task = reporter.task("preparing images", len(mine))
        for image in mine:
            scaled_path, hires_path = self._paths(image.sop_instance_uid)
            try:
                prepared = prepare_image(manifest, image, self.settings)
            except (MammoNodeError, OSError, ValueError) as exc:
                failed[image.sop_instance_uid] = str(exc)
                logger.warning("Image %s left out: %s", image.path, exc)
            else:
                hires = prepared.hires if prepared.hires is not None else prepared.scaled
                np.save(scaled_path, prepared.scaled.astype(np.float16), allow_pickle=False)
                np.save(hires_path, hires.astype(np.float16), allow_pickle=False)
                geometries[image.sop_instance_uid] = prepared.geometry.to_dict()
            reporter.advance(task)
        shard = self.root / f"index.rank{info.rank}.json"
        shard.write_text(json.dumps({"geometries": geometries, "failed": failed}))
        barrier(info)
        if info.is_main:
            merged: dict[str, dict] = {"geometries": {}, "failed": {}}
            for r in range(info.world):
                part = json.loads((self.root / f"index.rank{r}.json").read_text())
                merged["geometries"].update(part["geometries"])
                merged["failed"].update(part["failed"])
            tmp = self.root / ".index.json.tmp"
            tmp.write_text(json.dumps({"settings": self._key(), **merged}))
            os.replace(tmp, self.root / "index.json")
        barrier(info)
        self._load_index()
