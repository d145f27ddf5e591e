"""The on-disk layout of a node's data directory, in one place.

```
DATA/
  chunks/ab/<blake3-hex>   one immutable file per chunk, named by its BLAKE3 id;
                           ab = the first two hex digits (256 folders, made at start)
  cache/ab/<blake3-hex>    chunks this node fetched from peers but does not own;
                           evicted least recently used first beyond `cache_bytes`
  uploads/<session-id>/    the spool of one upload in progress:
      0, 1, 2 …            chunk files as they fill (each fsynced when full)
  tmp/                     files being written before they are renamed into place
  quarantine/<blake3-hex>  stored chunks the scrub found damaged, kept until a good
                           copy from a holder has replaced them
  state/                   the replicated metadata (written only by `consensus`):
      state.sqlite         the state machine's tables and the applied log index
      raft/wal/            the write-ahead log: checksummed segments and hard state
      raft/snapshots/      durable snapshots of state.sqlite, newest kept
      raft/incoming/       snapshots being exported or received (emptied at start)
  secret                   the cluster secret, when no `secret_file` is given
  gc-swept                 the last garbage collection epoch whose chunk sweep finished
                           here (node/cluster/gc.py); a sweep cut short runs again
```

A chunk file appears under `chunks/` only by rename of a file that was
fsynced first, and its folder is fsynced after the rename, so a chunk that
is visible is whole. `uploads/` and `tmp/` hold nothing a client was promised
and are emptied when the node starts.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from node.storage.errors import InsufficientSpace


@dataclass(frozen=True)
class FreeSpaceFloor:
    """The free disk a node keeps: writes that would go below it are refused.

    A full disk breaks more than the write that filled it: the Raft log and
    the state database need room to take the next commit, and a node that
    cannot fsync its log stops. So every byte a push brings (spooled bodies,
    chunks from peers) is measured against the floor before it is written;
    one `statvfs` per batch is cheap beside the write itself.
    """

    root: Path
    min_free_bytes: int = 0

    def free_bytes(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def has_room(self, incoming: int) -> bool:
        return self.min_free_bytes <= 0 or self.free_bytes() - incoming >= self.min_free_bytes

    def check(self, incoming: int) -> None:
        """InsufficientSpace when `incoming` more bytes would leave less than the floor."""
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise InsufficientSpace(
                "not enough free disk on this node to store the upload; retry later",
                free_bytes=free, incoming_bytes=incoming, min_free_bytes=self.min_free_bytes,
            )


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (renames, creations) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write `data` so that `path` holds either nothing or all of it.

    fsync the file, rename it into place, fsync the folder: the order that
    makes a crash leave the old state or the new one, never a torn file.
    """
    fd, tmp = _mkstemp(tmp_dir)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _mkstemp(tmp_dir: Path) -> tuple[int, Path]:
    import tempfile

    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
    return fd, Path(name)


@dataclass(frozen=True)
class DataDir:
    """Paths inside one node's data directory."""

    root: Path

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def state_db(self) -> Path:
        return self.state / "state.sqlite"

    @property
    def raft_wal(self) -> Path:
        return self.state / "raft" / "wal"

    @property
    def raft_snapshots(self) -> Path:
        return self.state / "raft" / "snapshots"

    @property
    def raft_incoming(self) -> Path:
        return self.state / "raft" / "incoming"

    @property
    def secret(self) -> Path:
        return self.root / "secret"

    @property
    def gc_swept(self) -> Path:
        return self.root / "gc-swept"

    def upload_folder(self, session_id: str) -> Path:
        return self.uploads / session_id

    @staticmethod
    def upload_chunk_file(upload_folder: Path, index: int) -> Path:
        """The spool file of an upload's chunk number `index` (0, 1, 2 … in blob order)."""
        return upload_folder / str(index)

    def cache_tmp_path(self, chunk_id: str, writer: int) -> Path:
        """Where a cache entry is written before its rename; `writer` keeps threads apart."""
        return self.tmp / f"c-{chunk_id}-{writer}"

    def chunk_path(self, chunk_id: str) -> Path:
        return self.chunks / chunk_id[:2] / chunk_id

    def cache_path(self, chunk_id: str) -> Path:
        return self.cache / chunk_id[:2] / chunk_id

    def prepare(self) -> None:
        """Create the layout and drop what a previous run left half-done."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in (self.uploads, self.tmp):
            shutil.rmtree(leftover, ignore_errors=True)
        for folder in (self.chunks, self.cache, self.uploads, self.tmp, self.state):
            folder.mkdir(exist_ok=True)
        for parent in (self.chunks, self.cache):
            made = False
            for i in range(256):
                sub = parent / f"{i:02x}"
                if not sub.exists():
                    sub.mkdir()
                    made = True
            if made:
                fsync_dir(parent)
        fsync_dir(self.root)
