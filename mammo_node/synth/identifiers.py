"""Deterministic UIDs and random generators: everything synthetic depends only on its seed."""

from __future__ import annotations

import hashlib

import numpy as np


def make_uid(*parts: object) -> str:
    """A valid DICOM UID (2.25 form, <= 44 characters) that depends only on ``parts``."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _seeded_rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))
