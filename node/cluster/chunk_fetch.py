"""Getting one chunk's verified bytes: from this node's disk, else from its holders.

A chunk on this node's disk is served from there. Otherwise its holders are
asked — owners first, then the rest of the ranking — ordered by zone and
round trip; when the first does not answer within a delay that follows its
observed fetch times, the next is asked as well (hedging), and the first
right answer wins. Every arrival is checked against its BLAKE3 id; a holder
that sends wrong bytes is counted and skipped. Fetched chunks are kept in the
cache, a damaged copy this node stores is rewritten with the good bytes, and
concurrent requests for one chunk share one fetch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import trio

from node.cluster.errors import ChunkLost, NoHolderReachable, PeerError, PeerSentWrongBytes
from node.cluster.peers import Peers
from node.cluster.placement import preference
from node.cluster.replication import replication_factors
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.errors import ChunkCorrupt, ChunkMissing

log = logging.getLogger(__name__)

DEFAULT_HEDGE = 0.5  # seconds before a second holder is asked, until fetch times are known
MIN_HEDGE = 0.02


@dataclass
class _Fetch:
    """One fetch of a chunk in flight, which later requests for the chunk wait on."""

    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None


@dataclass
class ChunkFetcher:
    """Chunk retrieval for one node."""

    config: Config
    chunks: ChunkStore
    peers: Peers
    disk: DiskThreads
    counters: Counter[str]
    _inflight: dict[str, _Fetch] = field(default_factory=dict)

    async def get(self, cid: str) -> bytes:
        """The chunk's verified bytes, from this node's disk or from its holders."""
        damaged = False
        try:
            data = await self.disk.run(self.chunks.read, cid)
            self.counters["chunk_cache_hits"] += 1  # served from this node's disk
            return data
        except ChunkMissing:
            pass
        except ChunkCorrupt:
            damaged = True
            self.counters["chunk_corrupt"] += 1
        self.counters["chunk_cache_misses"] += 1  # the chunk comes from a peer
        fetch = self._inflight.get(cid)
        if fetch is None:
            fetch = self._inflight[cid] = _Fetch()
            try:
                fetch.data = await self._fetch(cid)
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
                await self.disk.run(self.chunks.put, cid, data)
                log.info("repaired damaged local copy of chunk %s", cid)
            else:
                await self.disk.run(self.chunks.cache_put, cid, data)
        except OSError as exc:
            log.warning("could not keep chunk %s: %r", cid, exc)

    async def fetch_from_holders(self, cid: str) -> bytes:
        """The chunk's verified bytes from another holder, never this node's disk:
        for replacing a damaged copy stored here."""
        return await self._fetch(cid)

    def _hedge_delay(self, node_id: str) -> float:
        peer = self.peers.state.get(node_id)
        if peer is None or peer.fetch_time is None:
            return DEFAULT_HEDGE
        return max(MIN_HEDGE, 3 * peer.fetch_time)

    async def _fetch(self, cid: str) -> bytes:
        members = self.peers.placed()
        replication, _ = replication_factors(self.config, len(members))
        holders = self.peers.read_order(
            preference(cid, members, replication), replication, chunk=cid
        )
        if not holders:
            raise ChunkLost("no intact copy of the chunk exists on any member", chunk=cid)
        result: list[bytes] = []
        finished = 0
        progress = trio.Event()

        async def attempt(node_id: str) -> None:
            nonlocal finished, progress
            try:
                # Checked against its id on arrival; wrong bytes are counted on the peer.
                data = await self.peers.get_chunk(node_id, cid)
                result.append(data)
                self.counters["chunks_fetched"] += 1
                self.counters["bytes_fetched"] += len(data)
            except PeerSentWrongBytes:
                self.counters["peer_bad_chunks"] += 1
                log.error("peer %s sent wrong bytes for chunk %s", node_id, cid)
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
                    self.counters["hedged_fetches"] += 1  # the next holder is asked alongside
            await settle()
            nursery.cancel_scope.cancel()
        if not result:
            raise NoHolderReachable("no holder could provide a chunk of this blob", chunk=cid)
        return result[0]
