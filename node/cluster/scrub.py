"""The scrub: every chunk this node stores is read back and checked, at a bounded rate.

Bits rot on disks that nobody reads; a chunk read only at pull time may be
found damaged when its other copy is already gone. So the scrub walks the
chunk store, one folder at a time, re-reading each chunk and checking it
against its BLAKE3 id, at most `scrub_bytes_per_second` so client traffic
keeps the disk. A damaged chunk is quarantined (moved aside: it is served and
counted as missing from then on) and fetched again from a good holder; a
quarantined chunk no holder could provide is retried at the start of every
pass. A pass starts every `scrub_interval_seconds`, counted from the start
of the previous one, so a small store is not re-read in a loop.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from node.cluster.chunk_fetch import ChunkFetcher
from node.cluster.errors import ClusterError
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.errors import ChunkCorrupt, ChunkMissing, StorageError

log = logging.getLogger(__name__)


@dataclass
class ScrubStatus:
    """What `cluster status` shows of the scrub."""

    passes: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    damaged: int = 0
    repaired: int = 0
    last_pass_started: float | None = None  # unix time
    last_pass_finished: float | None = None
    last_pass_seconds: float | None = None

    def as_dict(self, quarantined: int) -> dict[str, Any]:
        return {**self.__dict__, "quarantined": quarantined}


@dataclass
class Scrubber:
    chunks: ChunkStore
    fetcher: ChunkFetcher
    disk: DiskThreads
    counters: Counter[str]
    bytes_per_second: float
    interval_seconds: float
    status: ScrubStatus = field(default_factory=ScrubStatus)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.bytes_per_second <= 0:
            return  # scrubbing is off
        while True:
            started = trio.current_time()
            await self.scrub_pass()
            await trio.sleep_until(started + self.interval_seconds)

    async def scrub_pass(self) -> None:
        status = self.status
        status.last_pass_started = time.time()
        began = trio.current_time()
        for cid in await self.disk.run(self.chunks.quarantined):
            await self._replace(cid)
        ids = self.chunks.stored_ids()
        while (cid := await self.disk.run(next, ids, None)) is not None:
            await self._check(cid)
        status.passes += 1
        status.last_pass_finished = time.time()
        status.last_pass_seconds = trio.current_time() - began

    async def _check(self, cid: str) -> None:
        started = trio.current_time()
        try:
            size = len(await self.disk.run(self.chunks.read, cid))
        except ChunkMissing:
            return  # dropped or replaced since the folder was listed
        except ChunkCorrupt:
            size = 0
            if await self.disk.run(self.chunks.quarantine, cid):
                self.status.damaged += 1
                self.counters["scrub_damaged"] += 1
                log.warning("scrub: chunk %s is damaged; quarantined, fetching a good copy", cid)
                await self._replace(cid)
        self.status.chunks_checked += 1
        self.status.bytes_checked += size
        # Pace by bytes read: the next chunk waits until this one's share of time is up.
        await trio.sleep_until(started + size / self.bytes_per_second)

    async def _replace(self, cid: str) -> None:
        try:
            if await self.disk.run(self.chunks.has, cid):
                await self.disk.run(self.chunks.read, cid)  # a push stored it again meanwhile
            else:
                data = await self.fetcher.fetch_from_holders(cid)
                await self.disk.run(self.chunks.put, cid, data)
        except (ClusterError, StorageError, OSError) as exc:
            log.warning("scrub: no good copy of chunk %s yet (%s); retried next pass", cid, exc)
            return
        await self.disk.run(self.chunks.release, cid)
        self.status.repaired += 1
        self.counters["scrub_repaired"] += 1
        log.info("scrub: chunk %s replaced by a good copy from a holder", cid)
