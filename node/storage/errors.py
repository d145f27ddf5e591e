"""What can go wrong on this node's disk, in the storage layer's own words.

These say what happened, not what a client is told: `node/api/errors.py`
maps each to its OCI code and status.
"""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Something this node's disk cannot do or does not hold."""

    def __init__(self, message: str = "", **detail: Any) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)
        self.detail = detail or None


class UploadUnknown(StorageError):
    """No upload session with that id is receiving on this node."""


class DigestMismatch(StorageError):
    """The bytes received do not hash to the digest the client named."""


class ChunkMissing(StorageError):
    """The chunk is not on this node's disk."""


class ChunkCorrupt(StorageError):
    """The chunk's bytes do not hash to its id."""


class InsufficientSpace(StorageError):
    """Storing these bytes would leave less free disk than the node's floor."""


class TooManyUploads(StorageError):
    """This node, or this repository on it, has as many open upload sessions as it allows."""
