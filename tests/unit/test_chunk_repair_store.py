"""The chunk store's part in repair: promoting a cached copy, and a guarded delete.

A repair deletes a copy it does not own only when nothing may be counting on
it: not while it lands, not within the grace period of a put or confirm, not
once the owners' confirmation is too old to lean on. A confirm answers only
for copies that are durable.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import pytest

from node.storage.chunks import ChunkStore, chunk_id
from node.storage.layout import DataDir

GRACE = 0.5


def make_store(root: Path, grace: float = GRACE) -> ChunkStore:
    data = DataDir(root)
    data.prepare()
    return ChunkStore(data, cache_bytes=1 << 20, grace_seconds=grace)


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return make_store(tmp_path / "node")


def chunk(size: int = 4096) -> tuple[str, bytes]:
    data = os.urandom(size)
    return chunk_id(data), data


def test_a_cached_copy_is_promoted_into_the_store_and_leaves_the_cache(store: ChunkStore) -> None:
    cid, data = chunk()
    store.cache_put(cid, data)
    assert not store.has(cid) and store.cached_chunks == 1
    assert store.promote(cid) == len(data)
    assert store.has(cid) and store.read(cid) == data
    assert store.cached_chunks == 0 and not store.data.cache_path(cid).exists()
    assert store.stored_chunks == 1 and store.stored_bytes == len(data)


def test_promote_without_a_cached_copy_says_so(store: ChunkStore) -> None:
    cid, _ = chunk()
    assert store.promote(cid) is None
    assert not store.has(cid)


def test_a_damaged_cached_copy_is_not_promoted(store: ChunkStore) -> None:
    cid, data = chunk()
    store.cache_put(cid, data)
    store.data.cache_path(cid).write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    assert store.promote(cid) is None
    assert not store.has(cid) and store.cached_chunks == 0
    assert store.corrupt_reads == 1


def test_an_unowned_copy_untouched_past_the_grace_is_dropped(store: ChunkStore) -> None:
    cid, data = chunk()
    store.put(cid, data)
    time.sleep(GRACE * 1.2)
    assert store.drop_unowned([cid], time.monotonic()) == [(cid, len(data))]
    assert not store.has(cid) and store.stored_chunks == 0 and store.stored_bytes == 0


def test_a_copy_put_within_the_grace_is_kept(store: ChunkStore) -> None:
    cid, data = chunk()
    store.put(cid, data)
    assert store.drop_unowned([cid], time.monotonic()) == []
    assert store.has(cid)


def test_a_copy_confirmed_to_another_node_within_the_grace_is_kept(store: ChunkStore) -> None:
    cid, data = chunk()
    store.put(cid, data)
    time.sleep(GRACE * 1.2)
    assert store.confirm([cid]) == [cid]  # another node counted this copy just now
    assert store.drop_unowned([cid], time.monotonic()) == []
    assert store.has(cid)


def test_a_stale_confirmation_from_the_owners_drops_nothing(store: ChunkStore) -> None:
    cid, data = chunk()
    store.put(cid, data)
    time.sleep(GRACE * 1.2)
    asked = time.monotonic() - GRACE  # the owners' promise has run out
    assert store.drop_unowned([cid], asked) == []
    assert store.has(cid)


def test_a_store_just_opened_drops_nothing_within_the_grace(tmp_path: Path) -> None:
    # After a restart the store knows no touches: it treats every chunk as just touched.
    cid, data = chunk()
    make_store(tmp_path / "node").put(cid, data)
    reopened = make_store(tmp_path / "node")
    assert reopened.drop_unowned([cid], time.monotonic()) == []
    time.sleep(GRACE * 1.2)
    assert reopened.drop_unowned([cid], time.monotonic()) == [(cid, len(data))]


def test_a_landing_copy_is_neither_confirmed_nor_dropped(store: ChunkStore) -> None:
    cid, data = chunk()
    store.put(cid, data)
    time.sleep(GRACE * 1.2)
    # Another writer holds the chunk's landing (renamed, folder not fsynced yet).
    assert store._claim(cid) is None
    try:
        assert store.confirm([cid]) == []
        assert store.drop_unowned([cid], time.monotonic()) == []
    finally:
        store._landed([cid])
    assert store.confirm([cid]) == [cid]


def test_confirm_and_drop_never_both_win(store: ChunkStore) -> None:
    # Many rounds of a confirm racing a drop: a copy answered "held" is still there.
    for _ in range(50):
        cid, data = chunk(1024)
        store.put(cid, data)
        store._touched.pop(cid, None)
        store._forgotten = time.monotonic() - 10 * GRACE
        held: list[str] = []
        racer = threading.Thread(target=lambda h=held, c=cid: h.extend(store.confirm([c])))
        racer.start()
        dropped = store.drop_unowned([cid], time.monotonic())
        racer.join()
        assert not (held and dropped)
        assert bool(held) == store.has(cid)


def test_two_nodes_each_asking_the_other_never_both_delete(tmp_path: Path) -> None:
    # Two holders whose membership views disagree: each thinks the other owns the
    # chunk and it does not. Each asks the other to confirm, then drops its own copy
    # if the answer was "held". In every interleaving one copy survives.
    cid, data = chunk()
    steps = [("a", "ask"), ("a", "drop"), ("b", "ask"), ("b", "drop")]
    orders = [
        order for order in itertools.permutations(steps)
        if order.index(("a", "ask")) < order.index(("a", "drop"))
        and order.index(("b", "ask")) < order.index(("b", "drop"))
    ]
    assert len(orders) == 6
    for number, order in enumerate(orders):
        stores = {n: make_store(tmp_path / f"{number}{n}") for n in "ab"}
        for store in stores.values():
            store.put(cid, data)
            store._touched.clear()
            store._forgotten = time.monotonic() - 10 * GRACE  # the put is long past
        answers: dict[str, tuple[bool, float]] = {}
        for node, step in order:
            other = stores["b" if node == "a" else "a"]
            if step == "ask":
                answers[node] = (other.confirm([cid]) == [cid], time.monotonic())
            elif answers[node][0]:
                stores[node].drop_unowned([cid], answers[node][1])
        left = sum(store.has(cid) for store in stores.values())
        assert left >= 1, order
        if order == tuple(steps):
            assert left == 1  # one after the other, the first one's delete goes through


def test_a_cached_copy_is_never_confirmed_as_a_replica(store: ChunkStore) -> None:
    cid, data = chunk()
    store.cache_put(cid, data)
    assert store.holds(cid) and store.confirm([cid]) == []
