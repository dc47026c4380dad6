"""The instance store: UID grammar, atomic commit, nothing outside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo_node.errors import InvalidInstanceError, StorageError
from mammo_node.filing.storage import InstanceStore, file_sha256, validate_uid


@pytest.mark.parametrize(
    "uid",
    [
        "../../etc/passwd",
        "1.2/../../x",
        "..",
        "1.2.3.",
        "1..2",
        "/1.2",
        "1.2\\3",
        "a.b",
        "1." + "2" * 70,
        "",
    ],
)
def test_invalid_uids_are_refused(uid: str) -> None:
    with pytest.raises(InvalidInstanceError) as info:
        validate_uid(uid, "StudyInstanceUID")
    assert "StudyInstanceUID" in str(info.value)


def test_commit_moves_the_temp_file_into_place(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "store")
    temp = store.write_temp(b"\x00" * 128 + b"DICM" + b"payload")
    digest = file_sha256(temp)
    rel = store.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    stored = store.commit(temp, rel)
    assert not temp.exists()
    assert stored.size == 139 and file_sha256(store.path(rel)) == digest
    assert rel.startswith("1.2.3/1.2.3.4/1.2.3.4.5.")
    # every version of an instance gets its own name: a replacement never overwrites
    assert store.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5") != rel
    assert list(store.tmp_dir.iterdir()) == []


def test_paths_outside_the_store_are_refused(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "store")
    with pytest.raises(StorageError):
        store.path("../outside.dcm")
