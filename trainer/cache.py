"""Decoded, oriented and rescaled images, prepared once per run and reused by every fold.

Two stores, both 16-bit (0..1 quantised to 0..65535, finer than float16's 11-bit mantissa)
and read back memory-mapped without pickle:

- ``ImageCache`` (RUN_DIR/cache/): each image at the holistic model's input width (all rows,
  so training can crop at random) - ~1.9 MB at the paper's 976 px instead of the 11.7 MB that
  float16 at 976 and 1952 px took. Filled incrementally: every prepared image is appended
  to this rank's ``progress.rankN.jsonl`` at once, so an interrupted build resumes where it
  stopped instead of starting again.
- ``RoiCache`` (RUN_DIR/fold_XX/roi_cache/): only what the attention model reads, the
  roi_size square around each image's COA, cut from the hires image while the fold's ROIs
  are made (the source file is decoded once more for that) and deleted when the fold is
  done. So the hires image (roi_scale x larger) is never stored.

The geometry of each image is kept so coordinates map back to stored pixels. With several
processes each rank prepares its share.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mammo_node.errors import MammoNodeError
from mammo_node.ml.preprocess import Geometry, PreparedImage, PreprocessSettings, preprocess
from trainer.data import ImageRecord, Manifest
from trainer.distributed import DistInfo, barrier
from trainer.progress import Reporter

logger = logging.getLogger(__name__)

CACHE_FORMAT = "uint16/2"
_SCALE = 65535.0


def _key(sop: str) -> str:
    return hashlib.sha1(sop.encode()).hexdigest()


def to_uint16(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * _SCALE).astype(
        np.uint16
    )


def from_uint16(stored: np.ndarray) -> np.ndarray:
    return np.asarray(stored, dtype=np.float32) / np.float32(_SCALE)


def prepare_image(
    manifest: Manifest, image: ImageRecord, settings: PreprocessSettings, *, with_hires: bool
) -> PreparedImage:
    """The same preprocessing the node applies, from a DICOM or PNG file."""
    path = manifest.image_path(image)
    if image.source == "png":
        with Image.open(path) as im:
            pixels = np.asarray(im)
        if pixels.ndim != 2:
            raise MammoNodeError(f'"{path}" is not a greyscale image (shape {pixels.shape}).')
        return preprocess(
            pixels, laterality=image.slot.laterality, settings=settings, with_hires=with_hires
        )
    ds = pydicom.dcmread(path)
    return preprocess(
        ds, laterality=image.slot.laterality, settings=settings, with_hires=with_hires
    )


class _Prepare(Dataset[tuple[int, np.ndarray | None, dict | None, str]]):
    """Decode + preprocess in loader workers: (index, uint16 array, geometry, error)."""

    def __init__(
        self,
        manifest: Manifest,
        images: Sequence[ImageRecord],
        settings: PreprocessSettings,
        cut: Callable[[PreparedImage, ImageRecord], np.ndarray] | None = None,
    ) -> None:
        self.manifest, self.images, self.settings, self.cut = manifest, images, settings, cut

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, dict | None, str]:
        image = self.images[i]
        try:
            prepared = prepare_image(
                self.manifest, image, self.settings, with_hires=self.cut is not None
            )
        except (MammoNodeError, OSError, ValueError) as exc:
            return i, None, None, str(exc)
        pixels = self.cut(prepared, image) if self.cut else prepared.scaled
        return i, to_uint16(pixels), prepared.geometry.to_dict(), ""


def _identity(item: object) -> object:
    return item


def _each_prepared(
    dataset: _Prepare, workers: int
) -> DataLoader[tuple[int, np.ndarray | None, dict | None, str]]:
    return DataLoader(
        dataset, batch_size=None, num_workers=workers, shuffle=False, collate_fn=_identity
    )


class ImageCache:
    def __init__(self, root: Path, settings: PreprocessSettings) -> None:
        self.settings = settings
        # Only the holistic width shapes these pixels; other settings share the cache.
        tag = hashlib.sha1(f"{CACHE_FORMAT}|{settings.input_size}".encode()).hexdigest()[:10]
        self.root = Path(root) / f"scaled-{settings.input_size}-{tag}"
        self.geometries: dict[str, Geometry] = {}
        self.failed: dict[str, str] = {}

    def _path(self, sop: str) -> Path:
        return self.root / f"{_key(sop)}.npy"

    def scaled(self, sop: str) -> np.ndarray:
        """The image at the holistic width, float32 0..1."""
        return from_uint16(np.load(self._path(sop), mmap_mode="r", allow_pickle=False))

    def read_index(self) -> None:
        for part in sorted(self.root.glob("progress.rank*.jsonl")):
            for line in part.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interruption: that image is redone
                sop = entry["sop"]
                if entry.get("error"):
                    self.failed[sop] = entry["error"]
                elif self._path(sop).is_file():
                    self.geometries[sop] = Geometry.from_dict(entry["geometry"])

    def build(
        self, manifest: Manifest, info: DistInfo, reporter: Reporter, *, workers: int = 0
    ) -> None:
        """Prepare every image of the manifest not yet cached (sharded over ranks)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.read_index()
        images = [i for e in manifest.exams for i in e.images.values()]
        todo = [
            i
            for i in images[info.rank :: info.world]
            if i.sop_instance_uid not in self.geometries and i.sop_instance_uid not in self.failed
        ]
        if todo:
            task = reporter.task("preparing images", len(todo))
            log = self.root / f"progress.rank{info.rank}.jsonl"
            with log.open("a", encoding="utf-8") as fh:
                for n, pixels, geometry, error in _each_prepared(
                    _Prepare(manifest, todo, self.settings), workers
                ):
                    image = todo[n]
                    sop = image.sop_instance_uid
                    if error:
                        logger.warning("Image %s left out: %s", image.path, error)
                        entry: dict[str, object] = {"sop": sop, "error": error}
                    else:
                        path = self._path(sop)
                        tmp = path.with_name(f".{path.stem}.tmp.npy")
                        np.save(tmp, pixels, allow_pickle=False)
                        os.replace(tmp, path)
                        entry = {"sop": sop, "geometry": geometry}
                    fh.write(json.dumps(entry) + "\n")
                    fh.flush()
                    reporter.advance(task)
        barrier(info)
        self.read_index()


class RoiCache:
    """One fold's attention inputs: the roi_size window at each image's ROI origin."""

    def __init__(self, root: Path, roi_size: int) -> None:
        self.root, self.roi_size = Path(root), roi_size

    def _path(self, sop: str) -> Path:
        return self.root / f"{_key(sop)}.npy"

    def crop(self, sop: str) -> np.ndarray:
        """The ROI, float32 0..1."""
        return from_uint16(np.load(self._path(sop), mmap_mode="r", allow_pickle=False))

    def build(
        self,
        manifest: Manifest,
        images: Sequence[ImageRecord],
        origins: Mapping[str, tuple[int, int]],
        settings: PreprocessSettings,
        info: DistInfo,
        reporter: Reporter,
        *,
        workers: int = 0,
    ) -> None:
        """Cut the missing ROIs of this rank's share of ``images`` from their hires images."""
        from trainer.engine import crop_hires

        self.root.mkdir(parents=True, exist_ok=True)
        todo = [
            i
            for i in images[info.rank :: info.world]
            if not self._path(i.sop_instance_uid).is_file()
        ]
        size = self.roi_size

        def cut(prepared: PreparedImage, image: ImageRecord) -> np.ndarray:
            hires = prepared.hires if prepared.hires is not None else prepared.scaled
            origin = origins[image.sop_instance_uid]
            return crop_hires(hires, (int(origin[0]), int(origin[1])), size).numpy()

        if todo:
            task = reporter.task("cutting ROIs", len(todo))
            for n, pixels, _, error in _each_prepared(
                _Prepare(manifest, todo, settings, cut), workers
            ):
                if error:
                    raise MammoNodeError(f"Image {todo[n].path} could not be read again: {error}")
                path = self._path(todo[n].sop_instance_uid)
                tmp = path.with_name(f".{path.stem}.tmp.npy")
                np.save(tmp, pixels, allow_pickle=False)
                os.replace(tmp, path)
                reporter.advance(task)
        barrier(info)

    def remove(self, info: DistInfo) -> None:
        barrier(info)
        if info.is_main:
            shutil.rmtree(self.root, ignore_errors=True)
        barrier(info)
