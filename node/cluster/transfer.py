"""Moving chunks between nodes: placing a new blob's chunks, and fetching chunks to serve.

Writing: once an upload's digest checks out, each chunk goes to its R
owners at once (a nursery, bounded concurrency). An owner that is down or
refuses is replaced by the next member in rendezvous order (a hinted copy,
which repair later moves home). The blob may be recorded only when W holders
of every chunk have it durable; a chunk this node received but does not own
is dropped once its owners hold it.

Reading: a chunk on this node's disk is served from there. Otherwise its
holders are asked — owners first, then the rest of the ranking — ordered by
zone and round trip; when the first does not answer within a delay that
follows its observed fetch times, the next is asked as well (hedging), and
the first right answer wins. Every arrival is checked against its BLAKE3 id;
a holder that sends wrong bytes is counted and skipped. Fetched chunks are
kept in the cache, and concurrent requests for one chunk share one fetch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from consensus.engine import Recipe
from node.cluster.errors import ChunkLost, NoHolderReachable, PeerError, TooFewHolders
from node.cluster.peers import Peers
from node.cluster.placement import Placed, owners, preference
from node.config import Config
from node.storage.chunks import ChunkStore, chunk_id
from node.storage.errors import ChunkCorrupt, ChunkMissing
from node.storage.spool import SpooledBlob

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_HEDGE = 0.5  # seconds before a second holder is asked, until fetch times are known
MIN_HEDGE = 0.02


def replication_factors(config: Config, members: int) -> tuple[int, int]:
    """(R, W): R capped at the member count, W at R."""
    r = max(1, min(config.replication, members))
    w = max(1, min(config.write_quorum or r, r))
    return r, w


@dataclass
class Transfers:
    """Chunk placement and retrieval for one node."""

    node_id: str
    config: Config
    chunks: ChunkStore
    peers: Peers
    disk: trio.CapacityLimiter
    counters: dict[str, int] = field(default_factory=dict)
    nursery: trio.Nursery | None = None  # the node's root nursery, once it runs
    _inflight: dict[str, _Fetch] = field(default_factory=dict)

    async def on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking disk work in a worker thread, bounded by the node's disk limiter."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.disk)

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- writing ---------------------------------------------------------------

    def placement(self) -> Placement:
        """A placement for one upload, over the membership as it is now."""
        return Placement(self)

    async def place_chunk(
        self, cid: str, path: Path, order: list[Placed], replication: int,
        adopt: list[tuple[str, Path]],
    ) -> int:
        """Store one chunk on `replication` holders, walking `order` past failures."""
        me = self.node_id
        data: bytes | None = None
        holders = 0
        candidates = [m.node_id for m in order]
        # Owners that are up first, then the rest of the ranking (hinted copies).
        owners = candidates[:replication]
        queue = [n for n in owners if self.peers.is_up(n)] + [
            n for n in candidates if n not in owners or not self.peers.is_up(n)
        ]
        while holders < replication and queue:
            batch, queue = queue[: replication - holders], queue[replication - holders :]
            remote = [n for n in batch if n != me]
            if remote and data is None:
                data = await self.on_disk(path.read_bytes)
            results: dict[str, bool] = {}
            async with trio.open_nursery() as nursery:
                for node_id in remote:
                    assert data is not None
                    nursery.start_soon(self._send_chunk, node_id, cid, data, results)
            if me in batch:
                adopt.append((cid, path))
                results[me] = True
            holders += sum(results.values())
            if any(n not in owners and ok for n, ok in results.items()):
                self._count("hinted_chunks")
        return holders

    async def _send_chunk(
        self, node_id: str, cid: str, data: bytes, results: dict[str, bool]
    ) -> None:
        try:
            await self.peers.put_chunk(node_id, cid, data)
            results[node_id] = True
        except PeerError as exc:
            log.warning("could not store chunk %s on %s: %s", cid, node_id, exc)
            results[node_id] = False

    # -- reading ---------------------------------------------------------------

    async def get(self, cid: str) -> bytes:
        """The chunk's verified bytes, from this node's disk or from its holders."""
        damaged = False
        try:
            return await self.on_disk(self.chunks.read, cid)
        except ChunkMissing:
            pass
        except ChunkCorrupt:
            damaged = True
            self._count("chunk_corrupt")
        fetch = self._inflight.get(cid)
        if fetch is None:
            fetch = self._inflight[cid] = _Fetch()
            try:
                fetch.data = await self._fetch(cid)
            except BaseException as exc:
                fetch.error = exc
                raise
            finally:
                fetch.done.set()
                del self._inflight[cid]
            await self._keep(cid, fetch.data, repair=damaged)
        else:
            await fetch.done.wait()
        if fetch.data is None:
            raise NoHolderReachable("no holder could provide a chunk of this blob", chunk=cid)
        return fetch.data

    async def _keep(self, cid: str, data: bytes, *, repair: bool) -> None:
        """Cache what was fetched; rewrite a damaged copy this node stores."""
        try:
            if repair:
                await self.on_disk(self.chunks.put, cid, data)
                log.info("repaired damaged local copy of chunk %s", cid)
            else:
                await self.on_disk(self.chunks.cache_put, cid, data)
        except OSError as exc:
            log.warning("could not keep chunk %s: %r", cid, exc)

    def _hedge_delay(self, node_id: str) -> float:
        peer = self.peers.state.get(node_id)
        if peer is None or peer.fetch_time is None:
            return DEFAULT_HEDGE
        return max(MIN_HEDGE, 3 * peer.fetch_time)

    async def _fetch(self, cid: str) -> bytes:
        members = self.peers.placed()
        replication, _ = replication_factors(self.config, len(members))
        holders = self.peers.read_order(preference(cid, members, replication), replication)
        if not holders:
            raise ChunkLost("no intact copy of the chunk exists on any member", chunk=cid)
        result: list[bytes] = []
        finished = 0
        progress = trio.Event()

        async def attempt(node_id: str) -> None:
            nonlocal finished, progress
            try:
                data = await self.peers.get_chunk(node_id, cid)
                if chunk_id(data) != cid:
                    self.peers.state[node_id].bad_chunks += 1
                    self._count("peer_bad_chunks")
                    log.error("peer %s sent wrong bytes for chunk %s", node_id, cid)
                else:
                    result.append(data)
                    self._count("chunks_fetched")
                    self._count("bytes_fetched", len(data))
            except PeerError as exc:
                log.debug("fetch of %s from %s failed: %s", cid, node_id, exc)
            finally:
                finished += 1
                progress.set()

        async def settle() -> None:
            """Wait until a holder answered right or every started attempt ended."""
            nonlocal progress
            while not result and finished < started:
                await progress.wait()
                progress = trio.Event()

        started = 0
        async with trio.open_nursery() as nursery:
            for position, node_id in enumerate(holders):
                nursery.start_soon(attempt, node_id)
                started += 1
                with trio.move_on_after(self._hedge_delay(node_id)):
                    await settle()
                if result:
                    break
                if finished < started and position + 1 < len(holders):
                    self._count("hedged_fetches")  # the next holder is asked alongside
            await settle()
            nursery.cancel_scope.cancel()
        if not result:
            raise NoHolderReachable("no holder could provide a chunk of this blob", chunk=cid)
        return result[0]


class Placement:
    """Placing the chunks of one upload on their holders.

    Each chunk can be offered as soon as it is complete in the spool, so its
    copies travel to the peers while the rest of the blob is still arriving;
    `finish` offers whatever is left, waits for all of them, and only then
    moves this node's own share into its store. Offered chunks are copied by
    tasks of the node's root nursery, because an upload outlives any single
    request; a chunk copied for an upload that is then abandoned is an orphan
    that garbage collection reclaims.
    """

    def __init__(self, transfers: Transfers) -> None:
        self.transfers = transfers
        self.members = transfers.peers.placed()
        self.replication, self.quorum = replication_factors(transfers.config, len(self.members))
        self.limiter = trio.CapacityLimiter(transfers.config.transfer_concurrency)
        self.adopt: list[tuple[str, Path]] = []
        self.holders: dict[str, int] = {}
        self.pending: dict[str, trio.Event] = {}
        self.offered = 0  # how many of the upload's chunks, in order, were offered

    def owns(self, cid: str) -> bool:
        """Whether placement gives this node a copy of the chunk (thread-safe, pure)."""
        me = self.transfers.node_id
        return any(m.node_id == me for m in owners(cid, self.members, self.replication))

    def offer(self, cid: str, path: Path, nursery: trio.Nursery) -> None:
        """Start copying one complete chunk in `nursery` (once; later offers are ignored)."""
        if cid in self.pending:
            return
        done = self.pending[cid] = trio.Event()
        nursery.start_soon(self._copy, cid, path, done)

    async def _copy(self, cid: str, path: Path, done: trio.Event) -> None:
        try:
            async with self.limiter:
                order = preference(cid, self.members, self.replication)
                self.holders[cid] = await self.transfers.place_chunk(
                    cid, path, order, self.replication, self.adopt
                )
        except (OSError, PeerError) as exc:
            log.warning("placing chunk %s failed: %r", cid, exc)
            self.holders[cid] = 0
        finally:
            done.set()

    async def finish(self, blob: SpooledBlob) -> None:
        """Every chunk on W or more holders and this node's share adopted; else TooFewHolders."""
        async with trio.open_nursery() as nursery:
            for cid, path in blob.chunks:
                self.offer(cid, path, nursery)
        for done in list(self.pending.values()):
            await done.wait()
        if self.adopt:
            await self.transfers.on_disk(self.transfers.chunks.adopt, self.adopt)
        failures = [cid for cid, _ in blob.chunks if self.holders.get(cid, 0) < self.quorum]
        if failures:
            raise TooFewHolders(
                f"fewer than {self.quorum} holders could store {len(failures)} chunk(s)",
                chunks=failures[:5],
            )


@dataclass
class _Fetch:
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None


@trio.as_safe_channel
async def chunk_pieces(
    transfers: Transfers, recipe: Recipe, spans: list[tuple[int, int, int]], window: int,
    first: bytes | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of `spans` in order, with up to `window` chunks fetched ahead."""
    slots: dict[int, _Fetch] = {}

    async def load(position: int) -> None:
        slot = slots[position]
        try:
            slot.data = await transfers.get(recipe.chunks[spans[position][0]])
        except Exception as exc:  # handed to the consumer, which raises it in order
            slot.error = exc
        finally:
            slot.done.set()

    async with trio.open_nursery() as nursery:
        def start(position: int) -> None:
            if position < len(spans) and position not in slots:
                slots[position] = _Fetch()
                if position == 0 and first is not None:
                    slots[0].data = first
                    slots[0].done.set()
                else:
                    nursery.start_soon(load, position)

        for position in range(min(window, len(spans))):
            start(position)
        for position, (_, lo, hi) in enumerate(spans):
            start(position + window)
            slot = slots[position]
            await slot.done.wait()
            del slots[position]
            if slot.error is not None:
                raise slot.error
            assert slot.data is not None
            data = slot.data
            yield data if (lo, hi) == (0, len(data)) else data[lo:hi]


def window_for(config: Config) -> int:
    return max(1, math.floor(config.fetch_window))
