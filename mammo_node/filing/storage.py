"""The instance store: Part-10 files exactly as received, written atomically and durably.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.<token>.dcm``.
UIDs are checked against the DICOM UID grammar before they touch a path, so a crafted UID
cannot escape the store. The random token in the name means a replacement never overwrites
the acknowledged older file until the database points at the new one.

Write protocol (``commit``): temp file in ``<root>/.tmp`` (same filesystem) -> fsync -> rename
into place -> fsync the directory. Only then is the row committed and success answered.
``commit_many`` does the same for several files (one exam's outputs), each folder fsynced once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mammo_node.errors import InvalidInstanceError, StorageError
from mammo_node.status import Status

_UID_RE = re.compile(r"^[0-9][0-9.]{0,63}$")
_HASH_CHUNK = 4 * 1024 * 1024


def validate_uid(value: object, name: str) -> str:
    """Return ``value`` as a UID string or raise InvalidInstanceError naming the attribute."""
    if value is None or str(value).strip() == "":
        raise InvalidInstanceError(
            f"{name} is missing", status=Status.MISSING_ATTRIBUTE, http_status=400
        )
    uid = str(value).strip().rstrip("\x00")
    if not _UID_RE.match(uid) or ".." in uid or uid.endswith("."):
        shown = uid if len(uid) <= 70 else uid[:67] + "..."
        raise InvalidInstanceError(
            f"{name} {shown!r} is not a valid DICOM UID (digits and dots, at most 64 chars)",
            status=Status.INVALID_UID,
            http_status=400,
        )
    return uid


@dataclass(frozen=True)
class StoredFile:
    rel_path: str
    size: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InstanceStore:
    """Durable, content-addressed-by-UID storage of Part-10 files under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp_dir = self.root / ".tmp"
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the instance store at {self.root}: {exc}") from exc

    # --- temp files ------------------------------------------------------------------
    def temp_path(self, suffix: str = ".dcm") -> Path:
        """A new empty temp file on the store's filesystem (so commit is a rename)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        return Path(name)

    def write_temp(self, data: bytes) -> Path:
        path = self.temp_path()
        path.write_bytes(data)
        return path

    # --- paths -----------------------------------------------------------------------
    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """A new, unique path for one version of an instance."""
        parts = [
            validate_uid(study_uid, "StudyInstanceUID"),
            validate_uid(series_uid, "SeriesInstanceUID"),
            f"{validate_uid(sop_uid, 'SOPInstanceUID')}.{secrets.token_hex(8)}.dcm",
        ]
        return "/".join(parts)

    def path(self, rel_path: str) -> Path:
        """Absolute path of a stored file; refuses anything outside the store."""
        full = (self.root / rel_path).resolve()
        if not full.is_relative_to(self.root) or full == self.root:
            raise StorageError(f"path {rel_path!r} lies outside the instance store")
        return full

    # --- commit ----------------------------------------------------------------------
    def commit(self, temp: Path, rel_path: str) -> StoredFile:
        """fsync ``temp`` and atomically move it to ``rel_path`` (then fsync the folder)."""
        return self.commit_many([(temp, rel_path)])[0]

    def commit_many(self, files: list[tuple[Path, str]]) -> list[StoredFile]:
        """``commit`` for several files at once (one exam's outputs): each file is fsynced and
        renamed into place, then each folder they went into is fsynced once. A failure leaves
        the files not yet moved as temp files (the caller discards them)."""
        stored: list[StoredFile] = []
        folders: dict[Path, None] = {}
        for temp, rel_path in files:
            final = self.path(rel_path)
            try:
                fd = os.open(temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                self._ensure_dir(final.parent)
                try:
                    os.replace(temp, final)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._copy_across_filesystems(temp, final)
            except OSError as exc:
                raise StorageError(f"cannot store {rel_path}: {exc}") from exc
            folders[final.parent] = None
            stored.append(StoredFile(rel_path=rel_path, size=size))
        for folder in folders:
            try:
                _fsync_dir(folder)
            except OSError as exc:
                raise StorageError(
                    f"cannot store into {folder.relative_to(self.root)}: {exc}"
                ) from exc
        return stored

    def _copy_across_filesystems(self, temp: Path, final: Path) -> None:
        """The temp file lies on another filesystem: copy, fsync, then rename here."""
        local = self.temp_path()
        shutil.copyfile(temp, local)
        fd = os.open(local, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(local, final)
        temp.unlink(missing_ok=True)

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` and fsync the parent of each level created."""
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for level in reversed(missing):
            try:
                level.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(level.parent)

    def remove(self, rel_path: str) -> None:
        """Delete a stored file that no row points at any more (after a replacement)."""
        try:
            self.path(rel_path).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {rel_path}: {exc}") from exc

    def clean_temp(self, older_than_seconds: float = 3600.0) -> int:
        """Delete temp files left by a crash (never acknowledged). Returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for temp in self.tmp_dir.iterdir():
            try:
                if temp.is_file() and temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
            except OSError:
                continue  # another process took it meanwhile
        return removed

    def discard_temp(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize
