"""Stored headers as DICOM JSON (PS3.18 F.2), with bulk data left on disk.

A header is parsed once (values over 1 KiB stay deferred, so pixel data is never read) and
kept in a small LRU cache keyed by the stored file's path, which holds its content hash: a
replaced instance gets a new key. Binary values over the threshold (and Pixel Data always)
become ``BulkDataURI`` entries relative to the instance (``bulk/7FE00010``), made absolute per
request; smaller binary values are inline (``InlineBinary``). An element pydicom cannot convert
is kept with its VR and no value, rather than failing the whole answer.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from mammo_node.errors import StorageError
from mammo_node.filing.storage import InstanceStore

logger = logging.getLogger(__name__)

BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_INLINE_ALL = 2**62
_TRAILING_GROUPS = (0xFFFA, 0xFFFC)  # digital signatures, data set trailing padding

JsonDataset = dict[str, Any]


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def _vr_of(ds: Any, tag: int, raw: RawDataElement) -> str:
    if raw.VR:
        return str(raw.VR)
    if tag == PIXEL_DATA:
        encapsulated = raw.length == _UNDEFINED
        return "OB" if encapsulated or int(ds.get("BitsAllocated", 16) or 16) <= 8 else "OW"
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def dataset_json(path: Path) -> JsonDataset:
    """DICOM JSON of a Part-10 file's dataset; bulk values as relative ``bulk/<tag>`` URIs."""
    try:
        ds = dcmread(path, defer_size=BULK_THRESHOLD)
    except Exception as exc:  # pydicom raises many types on malformed files
        raise StorageError(f"cannot read stored file {path.name}: {exc}") from exc
    out: JsonDataset = {}
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset would load deferred values
        tag = Tag(tag)
        if tag.group in _TRAILING_GROUPS:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            vr = _vr_of(ds, tag, raw)
            large = raw.length == _UNDEFINED or raw.length > BULK_THRESHOLD
            if tag == PIXEL_DATA or (vr in BULK_VRS and large):
                out[tag_key(tag)] = {"vr": vr, "BulkDataURI": f"bulk/{tag_key(tag)}"}
                continue
        try:
            element = ds[tag]
            out[tag_key(tag)] = element.to_json_dict(None, _INLINE_ALL)
        except Exception:  # a value pydicom cannot convert: keep the element, drop the value
            logger.debug("cannot convert %s of %s to JSON", tag, path.name, exc_info=True)
            out[tag_key(tag)] = {
                "vr": _vr_of(ds, tag, raw) if isinstance(raw, RawDataElement) else "UN"
            }
    return out


def with_base(dataset: JsonDataset, instance_url: str) -> JsonDataset:
    """A copy of a cached dataset with its bulk URIs made absolute under ``instance_url``."""
    out = dict(dataset)
    for key, value in dataset.items():
        uri = value.get("BulkDataURI")
        if uri is not None and not uri.startswith(("http:", "https:")):
            out[key] = {"vr": value["vr"], "BulkDataURI": f"{instance_url}/{uri}"}
    return out


def first_value(dataset: JsonDataset, key: str) -> Any:
    values = dataset.get(key, {}).get("Value") or []
    return values[0] if values else None


class HeaderCache:
    """Parsed headers of stored instances, least recently used dropped first. Thread-safe."""

    def __init__(self, store: InstanceStore, max_entries: int = 4096) -> None:
        self.store = store
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[str, JsonDataset] = OrderedDict()

    def get(self, rel_path: str) -> JsonDataset:
        with self._lock:
            found = self._items.get(rel_path)
            if found is not None:
                self._items.move_to_end(rel_path)
                return found
        parsed = dataset_json(self.store.path(rel_path))
        with self._lock:
            self._items[rel_path] = parsed
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return parsed

    def copy(self, rel_path: str) -> JsonDataset:
        return copy.deepcopy(self.get(rel_path))
