"""Raft snapshot files: the state machine's copy at a log index, made durable atomically.

A snapshot is two files in the snapshot directory. The data file,
``snap-<index>-<term>-<digest>.data`` (index and term as 16 hex digits, digest
the first 16 hex digits of the data's BLAKE3), holds exactly the bytes the
caller wrote, so an SQLite copy can be opened in place. The meta file,
``snap-<index>-<term>.meta``, is a msgpack map ``{"format": 1, "index",
"term", "voters", "data": <data file name>, "size", "blake3": <32 bytes>}``;
it is written last, so its presence is what makes a snapshot complete. Both
are written to ``*.tmp`` first, fsynced, renamed into place and the directory
fsynced, so a crash leaves either the previous snapshot or the new one, plus
perhaps a ``*.tmp`` leftover that loading ignores and the next save removes.
Naming the data by its digest means saving the same index twice never
overwrites the bytes a durable meta file vouches for. Older snapshots are
pruned only once the new one is durable.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import msgpack
from blake3 import blake3

from consensus.raft.types import SnapshotMeta
from consensus.raft.wal import fsync_directory

__all__ = ["SnapshotCorrupt", "file_digest", "load_latest_snapshot", "save_snapshot"]

_FORMAT = 1
_TMP_SUFFIX = ".tmp"
_META_SUFFIX = ".meta"
_DATA_SUFFIX = ".data"


class SnapshotCorrupt(Exception):
    """The newest complete snapshot cannot be trusted.

    Raised rather than falling back to an older snapshot, because the log may
    already have been compacted past it: starting from the older one would
    silently lose committed entries.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _stem(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:016x}-{meta.term:016x}"


def _meta_position(path: Path) -> tuple[int, int] | None:
    """(index, term) from a meta file's name, or None if it is not one."""
    parts = path.stem.split("-")
    if path.suffix != _META_SUFFIX or len(parts) != 3 or parts[0] != "snap":
        return None
    try:
        return int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None


def _write_durably(path: Path, write: Callable[[BinaryIO], None]) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def file_digest(path: Path) -> bytes:
    """The BLAKE3 digest of the file at `path`."""
    # Memory-mapped and multi-threaded: hashing a large SQLite copy reads it
    # once from the page cache without building a second copy in memory.
    hasher = blake3(max_threads=blake3.AUTO)
    if path.stat().st_size:
        hasher.update_mmap(path)
    return hasher.digest()


def _adopt(source: Path, target: Path) -> None:
    """Make the file at `source` durable and move it to `target`: a copy of the
    whole database is renamed into place rather than written a second time."""
    with open(source, "rb") as file:
        os.fsync(file.fileno())
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with open(source, "rb") as file:  # another file system: copy after all
            _write_durably(target, lambda out: shutil.copyfileobj(file, out))


def save_snapshot(
    directory: Path,
    meta: SnapshotMeta,
    write_data: Callable[[BinaryIO], None] | bytes | Path,
) -> Path:
    """Write a snapshot durably and return the path of its data file.

    ``write_data`` is the bytes, a function that streams them into the open
    file (so a large database copy never sits in memory), or a file that
    becomes the snapshot's data and is moved, not copied. Only after this
    returns may the write-ahead log be compacted to ``meta.index``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = _stem(meta)
    data_tmp = directory / f"{stem}{_DATA_SUFFIX}{_TMP_SUFFIX}"
    try:
        if isinstance(write_data, Path):
            _adopt(write_data, data_tmp)
        elif isinstance(write_data, bytes | bytearray | memoryview):
            payload = write_data
            _write_durably(data_tmp, lambda file: file.write(payload))
        else:
            _write_durably(data_tmp, write_data)
    except BaseException:
        # Only a crash should leave a temp file behind (the next save removes it).
        data_tmp.unlink(missing_ok=True)
        raise
    size = data_tmp.stat().st_size
    digest = file_digest(data_tmp)
    data_path = directory / f"{stem}-{digest.hex()[:16]}{_DATA_SUFFIX}"
    os.replace(data_tmp, data_path)
    # The data's name must be durable before a meta file can point at it.
    fsync_directory(directory)

    meta_record = msgpack.packb(
        {
            "format": _FORMAT,
            "index": meta.index,
            "term": meta.term,
            "voters": list(meta.voters),
            "data": data_path.name,
            "size": size,
            "blake3": digest,
        }
    )
    meta_tmp = directory / f"{stem}{_META_SUFFIX}{_TMP_SUFFIX}"
    _write_durably(meta_tmp, lambda file: file.write(meta_record))
    os.replace(meta_tmp, directory / f"{stem}{_META_SUFFIX}")
    fsync_directory(directory)

    _prune(directory, keep_meta=directory / f"{stem}{_META_SUFFIX}", keep_data=data_path)
    return data_path


def _prune(directory: Path, *, keep_meta: Path, keep_data: Path) -> None:
    """Remove older snapshots and crash leftovers now that a newer one is durable.

    Meta files go first: a snapshot whose meta is gone is already invisible,
    so a crash in the middle never leaves a meta pointing at missing data.
    """
    kept = _meta_position(keep_meta)
    assert kept is not None
    removed = False
    for path in sorted(directory.iterdir()):
        position = _meta_position(path)
        if position is not None and position < kept:
            path.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_directory(directory)
    referenced = {keep_data.name}
    for path in directory.iterdir():
        position = _meta_position(path)
        if position is not None and position > kept:
            # A newer snapshot than the one just saved: leave it and its data alone.
            try:
                referenced.add(_read_meta(path)[1].name)
            except SnapshotCorrupt:
                pass
    for path in directory.iterdir():
        if (
            path.name.startswith("snap-")
            and path.name not in referenced
            and (path.suffix == _TMP_SUFFIX or path.suffix == _DATA_SUFFIX)
        ):
            path.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_directory(directory)


def _read_meta(path: Path) -> tuple[SnapshotMeta, Path, int, bytes]:
    try:
        record = msgpack.unpackb(path.read_bytes())
        if record["format"] != _FORMAT:
            raise SnapshotCorrupt(path, f"unknown snapshot format {record['format']!r}")
        meta = SnapshotMeta(int(record["index"]), int(record["term"]), tuple(record["voters"]))
        data_name = str(record["data"])
        size = int(record["size"])
        digest = bytes(record["blake3"])
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise SnapshotCorrupt(path, f"unreadable meta file: {exc!r}") from exc
    if os.sep in data_name or not data_name.endswith(_DATA_SUFFIX):
        raise SnapshotCorrupt(path, f"meta names an odd data file {data_name!r}")
    return meta, path.with_name(data_name), size, digest


def load_latest_snapshot(
    directory: Path, *, verify: bool = True
) -> tuple[SnapshotMeta, Path] | None:
    """Return the newest complete snapshot's meta and data path, or None if there is none.

    With ``verify`` the data is hashed and compared with the digest recorded
    at save time (one sequential read); a mismatch raises SnapshotCorrupt.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [
        (position, path)
        for path in directory.iterdir()
        if (position := _meta_position(path)) is not None
    ]
    if not candidates:
        return None
    _, meta_path = max(candidates)
    meta, data_path, size, digest = _read_meta(meta_path)
    try:
        actual_size = data_path.stat().st_size
    except FileNotFoundError as exc:
        raise SnapshotCorrupt(data_path, "data file named by the meta file is missing") from exc
    if actual_size != size:
        raise SnapshotCorrupt(data_path, f"data is {actual_size} bytes, meta says {size}")
    if verify and file_digest(data_path) != digest:
        raise SnapshotCorrupt(data_path, "data does not match its BLAKE3 digest")
    return meta, data_path
