"""The chunk store sets aside damaged copies only, and forgets them once replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.storage.chunks import ChunkStore, chunk_id
from node.storage.layout import DataDir


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    data = DataDir(tmp_path / "node")
    data.prepare()
    return ChunkStore(data)


def test_a_damaged_copy_is_moved_aside_and_no_longer_served(store: ChunkStore) -> None:
    data = os.urandom(4096)
    cid = chunk_id(data)
    store.put(cid, data)
    path: Path = store.data.chunk_path(cid)
    path.write_bytes(b"x" + data[1:])
    assert store.quarantine(cid)
    assert not store.has(cid) and store.quarantined() == [cid]
    assert store.stored_chunks == 0 and store.stored_bytes == 0
    store.put(cid, data)  # a good copy from a holder
    store.release(cid)
    assert store.read(cid) == data and store.quarantined() == []


def test_a_copy_found_intact_when_checked_again_stays_in_place(store: ChunkStore) -> None:
    # The scrub read a damaged copy, but a repair replaced it before the move.
    data = os.urandom(4096)
    cid = chunk_id(data)
    store.put(cid, data)
    assert not store.quarantine(cid)
    assert store.read(cid) == data and store.quarantined() == []
    assert store.stored_chunks == 1
