"""The one exception root of mammo_node and its branches.

Errors a user can act on say what was wrong, where, and what to do.
"""

from __future__ import annotations

from mammo_node.status import Status


class MammoNodeError(Exception):
    """Root of every error raised on purpose by mammo_node."""


class ConfigError(MammoNodeError):
    """A setting is missing or invalid."""


class StorageError(MammoNodeError):
    """A file could not be written, read or placed in the instance store."""


class InvalidInstanceError(MammoNodeError):
    """A received dataset cannot be accepted (unparseable, missing or invalid UIDs...).

    ``status`` is the DIMSE status a C-STORE handler answers with; ``http_status`` the
    DICOMweb equivalent.
    """

    def __init__(
        self, message: str, *, status: int = Status.CANNOT_DECODE_DATA_SET, http_status: int = 400
    ) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = http_status


class DatabaseError(MammoNodeError):
    """The database could not be reached or refused a change."""


class ModelError(MammoNodeError):
    """A model bundle is missing, tampered with, or cannot score an image."""


class PixelDataError(MammoNodeError):
    """Pixel data cannot be decoded or has an unsupported layout."""


class OutputError(MammoNodeError):
    """A result object (SR, SC, SEG) could not be built."""


class DeliveryError(MammoNodeError):
    """A result could not be delivered to a destination."""


class NotFoundError(MammoNodeError):
    """What was asked for does not exist (an exam, an image of an exam): 404 at the web edge,
    exit status 1 with the message on the command line."""
