"""This node's chunks: owned ones in the store, fetched ones in a bounded cache.

Both are immutable files named by the BLAKE3 hash of their bytes, kept once
however many blobs share them. Every read is checked against the id before
a byte leaves the node, so a flipped bit on disk is a logged, counted error,
never wrong content served. The store holds what placement gives this node
(and hinted copies for a node that was down); the cache holds what this node
fetched to serve a pull, least recently used evicted first.

The store also remembers, in memory, when each chunk was last put or
confirmed by a push: a request to drop chunks an abandoned upload left
behind spares any chunk touched within the grace period, because another
push may be about to commit a recipe that uses it (see `drop_abandoned` and
`node.cluster.blob_writer`). The repair loop leans on the same memory: a
confirm answers only for durable copies and touches them under the store's
lock, and `drop_unowned` deletes a copy this node does not own only when
nothing touched it within the grace period (see `node.cluster.repair`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import blake3

from node.storage.errors import ChunkCorrupt, ChunkMissing
from node.storage.layout import DataDir, FreeSpaceFloor, fsync_dir, write_durably

log = logging.getLogger(__name__)

# Chunks whose last touch is remembered (about 200 bytes each). Beyond that the
# oldest are forgotten, and every chunk is treated as touched as late as the
# newest forgotten one: forgetting only ever makes drops more careful.
TOUCH_MEMORY = 100_000


def chunk_id(data: bytes | memoryview) -> str:
    # One thread: BLAKE3 outruns the disk on one core, and a second one is
    # better spent on the other requests.
    return blake3.blake3(data).hexdigest()


class ChunkStore:
    """Blocking operations on `DataDir.chunks` and `DataDir.cache`; call them from
    a worker thread. Counters and the cache index are guarded by one lock."""

    def __init__(
        self, data: DataDir, *, cache_bytes: int = 0, min_free_bytes: int = 0,
        grace_seconds: float = 600.0,
    ) -> None:
        self.data = data
        self.cache_bytes = cache_bytes
        self.floor = FreeSpaceFloor(data.root, min_free_bytes)
        self.grace_seconds = grace_seconds
        self._touched: OrderedDict[str, float] = OrderedDict()  # id → monotonic time, oldest first
        # Touches before this moment are not remembered: the start (a restarted
        # node knows nothing of earlier puts) or the newest forgotten entry.
        self._forgotten = time.monotonic()
        self.corrupt_reads = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, int] = OrderedDict()  # id → size, oldest first
        # Chunks one writer is landing (rename, then directory fsync). Between
        # the two the file exists but could vanish in a crash, so another
        # writer of the same chunk waits for the landing instead of trusting
        # that it exists.
        self._landing: dict[str, threading.Event] = {}
        self.stored_chunks = 0
        self.stored_bytes = 0
        self._scan()

    def _scan(self) -> None:
        for path in self.data.chunks.glob("??/*"):
            self.stored_chunks += 1
            self.stored_bytes += path.stat().st_size
        cached = sorted(
            ((p.stat().st_mtime, p.name, p.stat().st_size) for p in self.data.cache.glob("??/*")),
        )
        for _, cid, size in cached:
            self._cache[cid] = size

    @property
    def cached_chunks(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        # Under the lock: a worker thread may be changing the cache (a metrics scrape
        # reads this from the event loop).
        with self._lock:
            return sum(self._cache.values())

    def has(self, cid: str) -> bool:
        """Whether this node stores the chunk as one of its holders (not cache)."""
        return self.data.chunk_path(cid).exists()

    def holds(self, cid: str) -> bool:
        """Whether this node can serve the chunk from its own disk."""
        return self.has(cid) or cid in self._cache

    def _claim(self, cid: str) -> threading.Event | None:
        """Make this thread the one landing `cid`; or the landing to wait for."""
        with self._lock:
            landing = self._landing.get(cid)
            if landing is None:
                self._landing[cid] = threading.Event()
            return landing

    def _landed(self, cids: list[str]) -> None:
        with self._lock:
            for cid in cids:
                self._landing.pop(cid).set()

    def _count_stored(self, size: int) -> None:
        with self._lock:
            self.stored_chunks += 1
            self.stored_bytes += size

    def adopt(self, files: list[tuple[str, Path]]) -> None:
        """Move spool files into the store: fsync each (nearly free when the spool
        already did), rename it into place, then fsync each touched folder.

        A chunk that is already stored keeps its file: content addressing
        makes the two identical, and the spool copy is dropped. A chunk that
        another writer is landing is waited for only after this call's own
        folders are fsynced and its claims released, so two writers never wait
        on each other.
        """
        folders: set[Path] = set()
        claimed: list[str] = []
        elsewhere: list[tuple[str, Path, threading.Event]] = []
        try:
            for cid, source in files:
                # A recipe that uses the chunk is about to be proposed: no drop takes it.
                self._touch(cid)
                landing = self._claim(cid)
                if landing is not None:
                    elsewhere.append((cid, source, landing))
                    continue
                claimed.append(cid)
                target = self.data.chunk_path(cid)
                if target.exists():
                    source.unlink(missing_ok=True)
                    continue
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                size = source.stat().st_size
                os.replace(source, target)
                folders.add(target.parent)
                self._count_stored(size)
            for folder in folders:
                fsync_dir(folder)
        finally:
            self._landed(claimed)
        for cid, source, landing in elsewhere:
            landing.wait()
            self.adopt([(cid, source)])  # landed by then, or landed by this call

    def put(self, cid: str, data: bytes) -> None:
        """Store bytes received whole (from a peer), after checking they hash to `cid`.

        Returns only once the chunk's directory entry is durable, also when
        another writer is landing the same chunk at this moment.
        """
        if chunk_id(data) != cid:
            raise ChunkCorrupt(cid)
        while (landing := self._claim(cid)) is not None:
            landing.wait()
        try:
            self._touch(cid)
            target = self.data.chunk_path(cid)
            replacing = target.exists()
            if replacing:
                try:
                    self.read(cid)
                    return
                except (ChunkCorrupt, ChunkMissing):
                    pass  # replace a damaged copy with the good bytes
            self.floor.check(len(data))
            write_durably(target, data, self.data.tmp)
            if not replacing:
                self._count_stored(len(data))
        finally:
            self._landed([cid])

    def _touch(self, cid: str) -> None:
        with self._lock:
            self._touch_locked(cid, time.monotonic())

    def _touch_locked(self, cid: str, now: float) -> None:
        self._touched[cid] = now
        self._touched.move_to_end(cid)
        while self._touched:
            oldest, when = next(iter(self._touched.items()))
            if now - when < self.grace_seconds and len(self._touched) <= TOUCH_MEMORY:
                break
            # Past the grace period an entry says no more than forgetting it does.
            del self._touched[oldest]
            self._forgotten = max(self._forgotten, when)

    def confirm(self, cids: list[str]) -> list[str]:
        """Which of `cids` this node stores durably (not cache, not still landing); each
        one held counts as touched now.

        The check and the touch happen under the store's lock, the same lock a
        drop takes, so a chunk answered "held" cannot be deleted here within the
        grace period that follows: the promise a repair on another node relies
        on before it deletes its own copy (see `node.cluster.repair`).
        """
        held: list[str] = []
        now = time.monotonic()
        for cid in cids:
            with self._lock:
                if cid in self._landing or not self.data.chunk_path(cid).exists():
                    continue
                self._touch_locked(cid, now)
            held.append(cid)
        return held

    def promote(self, cid: str) -> int | None:
        """Make a cached copy a stored one, durably: verify it, fsync it, rename it into
        the store, fsync the folder, forget the cache entry. Returns its size, or None
        when there is no good cached copy (then it must be fetched).

        A repair prefers this to a fetch: the bytes are already on this disk,
        and a rename within one file system costs no room.
        """
        while (landing := self._claim(cid)) is not None:
            landing.wait()
        try:
            with self._lock:
                # Out of the index first, so no eviction unlinks the file under the rename.
                cached = self._cache.pop(cid, None)
            if cached is None:
                return None
            source, target = self.data.cache_path(cid), self.data.chunk_path(cid)
            try:
                with open(source, "rb", buffering=0) as f:
                    data = f.read()
                    os.fsync(f.fileno())
            except FileNotFoundError:
                return None
            if chunk_id(data) != cid:
                with self._lock:
                    self.corrupt_reads += 1
                log.error("cached chunk %s does not match its BLAKE3 id; dropped", cid)
                source.unlink(missing_ok=True)
                return None
            self._touch(cid)
            if target.exists():
                source.unlink(missing_ok=True)  # stored meanwhile: the copies are identical
                return len(data)
            os.replace(source, target)
            fsync_dir(target.parent)
            self._count_stored(len(data))
            return len(data)
        finally:
            self._landed([cid])

    def drop_unowned(self, cids: list[str], confirmed_at: float) -> list[tuple[str, int]]:
        """Delete stored copies this node does not own, once all their owners confirmed
        a durable copy in a request sent at `confirmed_at` (monotonic seconds);
        returns the (id, size) of each deleted.

        Each owner's confirm protects its copy for the grace period after it
        answered; deleting only within half of it keeps a margin for the two
        clocks. A chunk that is landing here, or was put or confirmed here
        within the grace period, is kept: another node may have counted this
        copy a moment ago. Check and unlink happen under the store's lock, like
        `confirm`, so the two never interleave.
        """
        dropped: list[tuple[str, int]] = []
        for cid in cids:
            path = self.data.chunk_path(cid)
            with self._lock:
                now = time.monotonic()
                if now - confirmed_at >= self.grace_seconds / 2:
                    break  # the owners' promise is too old to lean on; ask again
                if cid in self._landing or not path.exists():
                    continue
                if now - self._touched.get(cid, self._forgotten) < self.grace_seconds:
                    continue
                size = path.stat().st_size
                path.unlink()
                self.stored_chunks -= 1
                self.stored_bytes -= size
            dropped.append((cid, size))
        return dropped

    def drop_abandoned(self, cids: list[str], referenced: set[str]) -> tuple[list[str], list[str]]:
        """Delete the stored chunks of `cids` that no recipe uses (`referenced` says which
        do) and that no push touched within the grace period; returns (dropped, kept)."""
        dropped, kept = self.drop_unreferenced(cids, referenced)
        return [cid for cid, _ in dropped], kept

    def drop_unreferenced(
        self, cids: list[str], referenced: set[str]
    ) -> tuple[list[tuple[str, int]], list[str]]:
        """Delete the stored chunks of `cids` that no recipe uses and no push touched within
        the grace period; returns ((id, size) dropped, ids kept). What an abandoned upload's
        drop and a garbage collection's sweep both rely on.

        The touch check and the unlink happen under the store's lock, so a put
        or confirm either comes first (and the chunk is kept) or finds the chunk
        gone and writes it again. The unlink is not fsynced: a dropped chunk
        that comes back after a crash is unused bytes, never a wrong answer.
        """
        dropped: list[tuple[str, int]] = []
        kept: list[str] = []
        now = time.monotonic()
        for cid in cids:
            path = self.data.chunk_path(cid)
            with self._lock:
                if not path.exists():
                    continue
                touched = self._touched.get(cid, self._forgotten)
                if (
                    cid in referenced
                    or cid in self._landing
                    or now - touched < self.grace_seconds
                ):
                    kept.append(cid)
                    continue
                size = path.stat().st_size
                path.unlink()
                self.stored_chunks -= 1
                self.stored_bytes -= size
            dropped.append((cid, size))
        return dropped, kept

    def cached_ids(self) -> list[str]:
        """The ids of the chunks this node holds in its cache."""
        with self._lock:
            return list(self._cache)

    def drop_cached(self, cids: list[str], referenced: set[str]) -> list[tuple[str, int]]:
        """Delete the cached copies of `cids` that no recipe uses; returns (id, size) of each.
        A cached copy is never a replica, so no grace applies: a pull that misses it
        fetches the chunk from its holders again."""
        dropped: list[tuple[str, int]] = []
        for cid in cids:
            if cid in referenced:
                continue
            with self._lock:
                size = self._cache.pop(cid, None)
            if size is None:
                continue
            self.data.cache_path(cid).unlink(missing_ok=True)
            dropped.append((cid, size))
        return dropped

    def cache_put(self, cid: str, data: bytes) -> None:
        """Keep verified bytes fetched from a peer; the oldest cached chunks make room."""
        if self.cache_bytes <= 0 or cid in self._cache or self.has(cid):
            return
        if not self.floor.has_room(len(data)):
            return  # a cache entry is never worth going below the floor
        if chunk_id(data) != cid:
            raise ChunkCorrupt(cid)
        target = self.data.cache_path(cid)
        tmp = self.data.cache_tmp_path(cid, threading.get_ident())
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # no fsync: a cache entry lost in a crash is fetched again
        evict: list[str] = []
        with self._lock:
            self._cache[cid] = len(data)
            total = sum(self._cache.values())
            while total > self.cache_bytes and self._cache:
                old, size = self._cache.popitem(last=False)
                total -= size
                evict.append(old)
        for old in evict:
            self.data.cache_path(old).unlink(missing_ok=True)

    def stored_ids(self) -> Iterator[str]:
        """The ids of the chunks this node stores, one folder at a time."""
        for folder in sorted(self.data.chunks.glob("??")):
            for path in sorted(folder.iterdir()):
                yield path.name

    def quarantine(self, cid: str) -> bool:
        """Move a damaged stored chunk aside, so it counts and serves as missing until a
        good copy replaces it; False when it is gone or, checked again, intact (a
        repair landed it meanwhile: writers of one chunk take turns, so the good
        copy is never the one moved)."""
        self.data.quarantine.mkdir(exist_ok=True)
        source = self.data.chunk_path(cid)
        while (landing := self._claim(cid)) is not None:
            landing.wait()
        try:
            try:
                with open(source, "rb", buffering=0) as f:
                    data = f.read()
            except FileNotFoundError:
                return False
            if chunk_id(data) == cid:
                return False
            os.replace(source, self.data.quarantine / cid)
            fsync_dir(source.parent)
            with self._lock:
                self.stored_chunks -= 1
                self.stored_bytes -= len(data)
            return True
        finally:
            self._landed([cid])

    def quarantined(self) -> list[str]:
        """Ids of the damaged chunks set aside and not replaced yet."""
        folder = self.data.quarantine
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def release(self, cid: str) -> None:
        """Forget a quarantined copy once a good one is stored."""
        (self.data.quarantine / cid).unlink(missing_ok=True)

    def open_file(self, cid: str) -> tuple[int, int]:
        """An open descriptor of the chunk's file and its size, from the store or else
        the cache (touched as `read` touches it), for sending to a peer as it is on
        disk: the bytes are not read here, the receiver checks them against the id.
        The caller closes the descriptor; ChunkMissing when neither holds the chunk."""
        try:
            fd = os.open(self.data.chunk_path(cid), os.O_RDONLY)
        except FileNotFoundError:
            if cid not in self._cache:
                raise ChunkMissing(cid) from None
            try:
                fd = os.open(self.data.cache_path(cid), os.O_RDONLY)
            except FileNotFoundError:
                with self._lock:
                    self._cache.pop(cid, None)
                raise ChunkMissing(cid) from None
            with self._lock:
                if cid in self._cache:
                    self._cache.move_to_end(cid)
        try:
            return fd, os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise

    def read(self, cid: str) -> bytes:
        """The chunk's bytes from the store or the cache, verified against its id."""
        path = self.data.chunk_path(cid)
        cached = False
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
        except FileNotFoundError:
            if cid not in self._cache:
                raise ChunkMissing(cid) from None
            path, cached = self.data.cache_path(cid), True
            try:
                with open(path, "rb", buffering=0) as f:
                    data = f.read()
            except FileNotFoundError:
                with self._lock:
                    self._cache.pop(cid, None)
                raise ChunkMissing(cid) from None
        if chunk_id(data) != cid:
            with self._lock:
                self.corrupt_reads += 1
                if cached:
                    self._cache.pop(cid, None)
            log.error("chunk %s on disk does not match its BLAKE3 id (%s)", cid, path)
            if cached:
                path.unlink(missing_ok=True)
            raise ChunkCorrupt(cid)
        if cached:
            with self._lock:
                if cid in self._cache:
                    self._cache.move_to_end(cid)
        return data
