"""Downsampled, hung PNGs of stored images for the exam page, cached on disk.

``<data_dir>/cache/views/<sop>.<sha16>.<variant>.png``: the content hash in the name means a
replaced instance never shows a stale picture; files are written atomically, so concurrent
requests at worst render the same picture twice. A Secondary Capture of a view is hung with
the flips of its source image (it lies on the source pixel for pixel), so that the heat map
sits exactly over the mammogram and the ROI boxes drawn from the stored grid.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from sqlalchemy import select

from mammo_node.db.models import Exam, Instance
from mammo_node.db.session import Database
from mammo_node.errors import NotFoundError, PixelDataError
from mammo_node.filing.storage import InstanceStore
from mammo_node.web import render
from mammo_node.web.dicomjson import HeaderCache

logger = logging.getLogger(__name__)

MAX_SIZE = (1024, 1280)  # width, height: about a reading-room tile on a 2-4 MP screen


# the image does not exist or does not belong to the exam asked about (the name before
# NotFoundError was the one not-found error)
ViewNotFoundError = NotFoundError


@dataclass(frozen=True)
class StoredImage:
    sop_instance_uid: str
    rel_path: str
    laterality: str | None
    view: str | None
    rows: int | None
    columns: int | None
    patient_orientation: str | None = None  # None: not indexed (filed before 0009)


class ViewImages:
    def __init__(
        self, db: Database, store: InstanceStore, headers: HeaderCache, cache_dir: Path
    ) -> None:
        self.db = db
        self.store = store
        self.headers = headers
        self.cache_dir = cache_dir
        # flips decided from the pixels (no PatientOrientation), per stored version
        self._pixel_flips: dict[str, render.Flips] = {}

    def _lookup(self, study_uid: str, sop_uid: str) -> StoredImage:
        with self.db.read() as session:
            row = session.execute(
                select(
                    Instance.sop_instance_uid,
                    Instance.rel_path,
                    Instance.laterality,
                    Instance.view,
                    Instance.rows,
                    Instance.columns,
                    Instance.patient_orientation,
                    Instance.pruned_at,
                )
                .join(Exam, Instance.exam_fk == Exam.id)
                .where(Exam.study_uid == study_uid, Instance.sop_instance_uid == sop_uid)
            ).first()
        if row is None:
            raise NotFoundError(f"no image {sop_uid} in exam {study_uid}")
        if row.pruned_at is not None:
            raise NotFoundError(
                f"image {sop_uid} was deleted by retention on {row.pruned_at.date().isoformat()}"
            )
        return StoredImage(*row[:7])

    @staticmethod
    def version(image: StoredImage) -> str:
        """Names one stored version of an instance (every version has its own file name)."""
        return hashlib.sha256(image.rel_path.encode()).hexdigest()[:16]

    def flips(self, image: StoredImage) -> render.Flips:
        """How to hang the image: from its indexed PatientOrientation (no file read); from
        the pixels, once per stored version, when it has none."""
        if image.patient_orientation is not None:
            values = image.patient_orientation.split("\\") if image.patient_orientation else None
        else:  # filed before the column existed
            orientation = self.headers.get(image.rel_path).get("00200020", {}).get("Value")
            values = [str(v) for v in orientation] if orientation else None
        if values and len(values) == 2:
            return render.hanging_flips(image.laterality, image.view, values, None)
        found = self._pixel_flips.get(image.rel_path)
        if found is None:
            pixels = render.display_image(dcmread(self.store.path(image.rel_path)))
            found = render.hanging_flips(image.laterality, image.view, values, pixels)
            if len(self._pixel_flips) >= 4096:
                self._pixel_flips.clear()
            self._pixel_flips[image.rel_path] = found
        return found

    def flips_for(self, study_uid: str, sop_uid: str) -> render.Flips:
        return self.flips(self._lookup(study_uid, sop_uid))

    def png(self, study_uid: str, sop_uid: str, *, hung_like: str | None = None) -> Path:
        """Cached PNG of ``sop_uid``; ``hung_like`` names the source whose flips it takes."""
        image = self._lookup(study_uid, sop_uid)
        source = self._lookup(study_uid, hung_like) if hung_like else image
        flips = self.flips(source)
        variant = f"h{int(flips.horizontal)}v{int(flips.vertical)}.{MAX_SIZE[0]}x{MAX_SIZE[1]}"
        path = self.cache_dir / f"{sop_uid}.{self.version(image)}.{variant}.png"
        if path.is_file():
            return path
        try:
            ds = dcmread(self.store.path(image.rel_path))
            picture = Image.fromarray(render.display_image(ds))
        except PixelDataError:
            raise
        except Exception as exc:  # pydicom raises many types on malformed files
            raise PixelDataError(f"cannot render {sop_uid}: {exc}") from exc
        picture = render.apply_flips(render.fit(picture, MAX_SIZE), flips)
        render.write_atomically(path, render.encode_image(picture, "image/png"))
        logger.debug("rendered view %s (%s)", sop_uid, variant)
        return path

    def overlay_png(self, study_uid: str, seg_uid: str, *, hung_like: str) -> Path:
        """Cached RGBA PNG of a binary SEG over its source image ``hung_like``.

        The SEG frame lies on the source's pixel grid, so it is scaled to the size of the
        source's view PNG and hung with the source's flips.
        """
        segmentation = self._lookup(study_uid, seg_uid)
        source = self._lookup(study_uid, hung_like)
        flips = self.flips(source)
        size = render.fitted_size(source.columns or 1, source.rows or 1, MAX_SIZE)
        variant = f"h{int(flips.horizontal)}v{int(flips.vertical)}.{size[0]}x{size[1]}"
        path = self.cache_dir / f"{seg_uid}.{self.version(segmentation)}.overlay.{variant}.png"
        if path.is_file():
            return path
        try:
            mask = np.asarray(dcmread(self.store.path(segmentation.rel_path)).pixel_array)
        except Exception as exc:  # pydicom raises many types on malformed files
            raise PixelDataError(f"cannot read segmentation {seg_uid}: {exc}") from exc
        if mask.ndim == 3:
            mask = mask.any(axis=0)
        if mask.shape != (source.rows, source.columns):
            raise PixelDataError(
                f"segmentation {seg_uid} is {mask.shape[1]}x{mask.shape[0]}; its source "
                f"{hung_like} is {source.columns}x{source.rows}"
            )
        picture = render.apply_flips(render.mask_overlay(mask, size), flips)
        render.write_atomically(path, render.encode_image(picture, "image/png"))
        return path
