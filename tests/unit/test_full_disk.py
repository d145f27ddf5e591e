"""A disk with no room left: the Raft log and the state database refuse the write
with StorageFull, keep nothing of it, and take the same write once there is room
(the driver waits and retries instead of stopping the node).

The disk is a real 4 MiB tmpfs, so this needs root (CI runs as root).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus import commands as c
from consensus.engine import StateApplier
from consensus.raft.errors import StorageFull
from consensus.raft.types import Entry, EntryKind, HardState
from consensus.raft.wal import WriteAheadLog
from tests.conftest import tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    """Take every free byte of the disk with one file; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 512, 1):  # big writes, then the last bytes
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def entry(index: int, size: int = 100) -> Entry:
    return Entry(1, index, EntryKind.NORMAL, b"%d:" % index + b"x" * size)


def test_a_full_disk_refuses_a_log_append_keeps_nothing_of_it_and_takes_it_later(
    small_disk: Path,
) -> None:
    directory = small_disk / "wal"
    wal, _ = WriteAheadLog.open(directory)
    wal.save(HardState(term=1, vote="n1", commit=0), [entry(1), entry(2)])
    filler = fill(small_disk)
    with pytest.raises(StorageFull):
        wal.save(None, [entry(3, size=256 * 1024)])
    filler.unlink()
    wal.save(None, [entry(3, size=256 * 1024)])  # the log is usable: no reopen needed
    wal.close()
    _, recovered = WriteAheadLog.open(directory)
    assert [e.index for e in recovered.entries] == [1, 2, 3]
    assert recovered.entries[2].data == entry(3, size=256 * 1024).data
    assert recovered.torn_bytes == 0


def test_a_full_disk_refuses_to_apply_a_batch_and_the_same_batch_applies_later(
    small_disk: Path,
) -> None:
    applier = StateApplier(small_disk / "state.sqlite")
    blob = c.PutBlob(repo="a", digest="sha256:" + "1" * 64, size=0, chunk_size=8, chunks=[])
    applier.apply_batch([(1, blob.encode())])
    big = [
        (index, c.PutManifest(repo="a", digest=f"sha256:{index:064x}", media_type="m",
                              body=b"{" + b" " * 200_000 + b"}", tag=f"t{index}").encode())
        for index in range(2, 12)
    ]
    filler = fill(small_disk)
    with pytest.raises(StorageFull):
        applier.apply_batch(big)
    assert applier.applied_index == 1  # nothing of the refused batch is visible
    filler.unlink()
    applier.apply_batch(big)
    assert applier.applied_index == 11
    assert applier.queries.tag("a", "t11") == f"sha256:{11:064x}"
