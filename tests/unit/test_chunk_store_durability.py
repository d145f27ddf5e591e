"""A chunk is reported stored only once its directory entry is durable.

Two writers of the same chunk race often (a push and a repair, two peers
placing the same chunk): the second sees the file the first renamed into
place, and if it answered then, a crash before the first one's directory
fsync could lose a chunk both had acknowledged. These tests hold the first
writer inside its directory fsync (the real one, on a real data directory)
and watch when the second one returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import node.storage.chunks as chunks_module
import node.storage.layout as layout_module
from node.storage.chunks import ChunkStore, chunk_id
from node.storage.layout import DataDir

DATA = b"chunk bytes that two writers deliver at once"
WAIT = 10.0


class HeldDirectoryFsync:
    """Replaces `fsync_dir`: the first thread to call it waits for `release`."""

    def __init__(self, real: Callable[[Path], None]) -> None:
        self.real = real
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[str] = []
        self._first: int | None = None
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        with self._lock:
            if self._first is None:
                self._first = threading.get_ident()
            held = self._first == threading.get_ident()
        if held:
            self.entered.set()
            assert self.release.wait(WAIT)
        self.real(path)
        if held:
            self.events.append("first writer's directory fsync done")


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    data = DataDir(tmp_path / "node")
    data.prepare()
    return ChunkStore(data)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldDirectoryFsync:
    held = HeldDirectoryFsync(layout_module.fsync_dir)
    monkeypatch.setattr(layout_module, "fsync_dir", held)
    monkeypatch.setattr(chunks_module, "fsync_dir", held)
    return held


def _race(store: ChunkStore, held: HeldDirectoryFsync,
          first: Callable[[], None], second: Callable[[], None]) -> None:
    cid = chunk_id(DATA)
    writer = threading.Thread(target=first)
    writer.start()
    assert held.entered.wait(WAIT), "the first writer never reached its directory fsync"
    assert store.data.chunk_path(cid).exists()  # renamed into place, not yet durable

    def second_writer() -> None:
        second()
        held.events.append("second writer returned")

    racer = threading.Thread(target=second_writer)
    racer.start()
    racer.join(0.5)
    still_waiting = racer.is_alive()
    held.release.set()
    writer.join(WAIT)
    racer.join(WAIT)
    assert still_waiting, "the second writer answered while the entry was not yet durable"
    assert held.events == ["first writer's directory fsync done", "second writer returned"]


def test_second_put_of_a_chunk_waits_for_the_first_puts_directory_fsync(
    store: ChunkStore, held: HeldDirectoryFsync,
) -> None:
    cid = chunk_id(DATA)
    _race(store, held, lambda: store.put(cid, DATA), lambda: store.put(cid, DATA))
    assert store.read(cid) == DATA
    assert store.stored_chunks == 1


@pytest.mark.parametrize("first", ["adopt", "put"])
def test_put_and_adopt_of_one_chunk_wait_for_each_others_directory_fsync(
    store: ChunkStore, held: HeldDirectoryFsync, first: str,
) -> None:
    cid = chunk_id(DATA)
    spooled = store.data.tmp / "spooled"
    spooled.write_bytes(DATA)
    writers = {"adopt": lambda: store.adopt([(cid, spooled)]), "put": lambda: store.put(cid, DATA)}
    second = "put" if first == "adopt" else "adopt"
    _race(store, held, writers[first], writers[second])
    assert store.read(cid) == DATA
    assert not spooled.exists()
    assert store.stored_chunks == 1
