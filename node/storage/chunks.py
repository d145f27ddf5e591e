"""This node's chunk store: immutable files named by the BLAKE3 hash of their bytes.

A chunk is stored once however many blobs share it. Every read is checked
against the id before a byte leaves the node, so a flipped bit on disk is a
logged, counted error and a failed request, never wrong content served.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import blake3

from node.storage.layout import DataDir, fsync_dir, write_durably

log = logging.getLogger(__name__)


class ChunkMissing(Exception):
    """The chunk is not on this node's disk."""


class ChunkCorrupt(Exception):
    """The chunk's bytes do not hash to its id."""


def chunk_id(data: bytes | memoryview) -> str:
    # One thread: BLAKE3 outruns the disk on one core, and a second one is
    # better spent on the other requests.
    return blake3.blake3(data).hexdigest()


class ChunkStore:
    """Blocking operations on `DataDir.chunks`; call them from a worker thread."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self.corrupt_reads = 0

    def has(self, cid: str) -> bool:
        return self.data.chunk_path(cid).exists()

    def adopt(self, files: list[tuple[str, Path]]) -> None:
        """Move fsynced spool files into the store, then fsync each touched folder.

        A chunk that is already stored keeps its file: content addressing
        makes the two identical, and the spool copy is dropped.
        """
        folders: set[Path] = set()
        for cid, source in files:
            target = self.data.chunk_path(cid)
            if target.exists():
                source.unlink(missing_ok=True)
                continue
            os.replace(source, target)
            folders.add(target.parent)
        for folder in folders:
            fsync_dir(folder)

    def put(self, cid: str, data: bytes) -> None:
        """Store bytes received whole (from a peer), after checking they hash to `cid`."""
        if chunk_id(data) != cid:
            raise ChunkCorrupt(cid)
        target = self.data.chunk_path(cid)
        if not target.exists():
            write_durably(target, data, self.data.tmp)

    def read(self, cid: str) -> bytes:
        """The chunk's bytes, verified against its id."""
        path = self.data.chunk_path(cid)
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
        except FileNotFoundError:
            raise ChunkMissing(cid) from None
        if chunk_id(data) != cid:
            self.corrupt_reads += 1
            log.error("chunk %s on disk does not match its BLAKE3 id (%s)", cid, path)
            raise ChunkCorrupt(cid)
        return data
