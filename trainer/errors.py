"""The trainer's exception root (a branch of mammo_node's)."""

from __future__ import annotations

from mammo_node.errors import MammoNodeError


class TrainerError(MammoNodeError):
    """Root of every error the trainer raises on purpose."""


class DataError(TrainerError):
    """The data directory, labels or manifest are missing, malformed or inconsistent."""


class RunError(TrainerError):
    """A run directory is missing, incomplete or was made with other settings."""
