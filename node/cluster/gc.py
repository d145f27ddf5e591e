"""Online garbage collection across the cluster: what no manifest needs frees its bytes.

The protocol, in two steps that never lose a blob a push relies on:

1. Metadata. `CollectGarbage(now, grace_seconds)` is one command, applied at
   one log position on every node (consensus/garbage.py holds the selection):
   it removes each repository blob link that no manifest of that repository
   references (config, layers, index children; a referrer is a manifest with
   its own references) and that was made before `now - grace`, then every
   recipe no link is left to, and moves the `gc_epoch` counter. A push links
   its layers when each is pushed (PutBlob and MountBlob carry the proposer's
   time), so they stay through the grace period that the manifest takes to
   follow; pushing or mounting a linked blob again starts its grace anew. A
   manifest naming a blob collected meanwhile is refused when applied (the
   state machine checks every referenced link), and so is a mount of a
   collected recipe: a manifest never points at nothing, the client pushes
   the blob again. The leader proposes a collection every `gc_interval`
   seconds with `gc_grace`; an admin runs one by hand with any grace (0 for
   an operator who knows no push is under way), or asks for a dry run: the
   same selection over a read-only connection, with the chunks it would free
   on each node reckoned from placement.

2. Chunks. Every node, once it has applied a collection (its `gc_epoch` is
   past the last one it swept), takes a read barrier, reads which chunks the
   remaining recipes use, and deletes every stored chunk no recipe uses and no
   push touched within the chunk store's grace, and every cached chunk no
   recipe uses. A push touches the chunks it relies on when it puts them and
   again when it confirms its holders just before proposing its recipe
   (node/cluster/blob_writer.py), and the touch check and the unlink happen
   under the store's lock: a push reusing a chunk either touched it first
   (the chunk stays) or finds it gone and sends it again. A recipe committed
   after the barrier was confirmed, so touched, moments before; the sweep
   reads the recipes again (after a new barrier) before what it read is a
   quarter of the touch grace old, so such a touch is always recent enough
   to count. Cached copies are never replicas and go with no grace. The sweep is
   rate limited (`gc_sweep_chunks_per_second`) and reports its progress; the
   last epoch it finished is written to `DATA/gc-swept` only at the end, so a
   node killed mid-sweep, or one whose sweep spared chunks still within the
   touch grace, sweeps again (after a restart every chunk counts as touched
   at start, so that sweep frees them once the grace has passed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from consensus.engine import CollectGarbage, Engine, NoQuorum, Refused, unpack_chunk_ids
from node.cluster.placement import Placed, owners
from node.cluster.replication import replication_factors
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.layout import DataDir, write_durably

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.5  # how often the sweep looks for a new gc_epoch
SWEEP_BATCH = 512  # chunks examined per trip to a worker thread
SWEEP_ATTEMPTS = 4  # sweeps of one epoch that spared touched chunks before it counts done


@dataclass
class GcStatus:
    """What `/_cluster/status` and the metrics show of this node's chunk sweeps."""

    state: str = "idle"  # "idle" or "sweeping"
    epoch: int = 0  # the newest collection this node has applied
    swept_epoch: int = 0  # the newest one whose sweep finished here
    examined: int = 0  # progress of the sweep under way (or the last one)
    to_examine: int = 0
    chunks_freed: int = 0  # since this node started
    bytes_freed: int = 0
    cached_chunks_freed: int = 0
    cached_bytes_freed: int = 0
    last_chunks_freed: int = 0  # by the last sweep, stored and cached
    last_bytes_freed: int = 0
    last_spared: int = 0  # unreferenced chunks a push touched too recently to delete
    last_started: float | None = None  # Unix time
    last_finished: float | None = None
    last_duration_seconds: float | None = None
    sweeps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class GarbageCollector:
    """The node's GC jobs: the leader's schedule and this node's chunk sweep."""

    def __init__(
        self, config: Config, engine: Engine, chunks: ChunkStore, data: DataDir,
        disk: DiskThreads, *, on_collected: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.chunks = chunks
        self.data = data
        self.disk = disk
        self.status = GcStatus(swept_epoch=self._read_swept())
        self._on_collected = on_collected  # (detail dict) -> None: the audit record

    # -- step 1: collections ---------------------------------------------------------

    async def collect(self, grace_seconds: int) -> dict[str, int]:
        """Propose one collection now; returns what it removed from the state."""
        cmd = CollectGarbage(now=int(time.time()), grace_seconds=grace_seconds)
        await self.engine.propose(cmd)
        run = self.engine.queries.gc_run_of(cmd.id)
        detail = {"epoch": run.epoch, "links": run.links, "blobs": run.blobs,
                  "bytes": run.bytes, "now": run.now, "grace_seconds": run.grace_seconds}
        return detail

    async def dry_run(self, grace_seconds: int, placed: list[Placed]) -> dict[str, Any]:
        """What a collection with `grace_seconds` would remove now, and the chunks and
        bytes it would free on each node as placement gives them out (cached copies
        come on top of that). The same selection the state machine applies."""
        now = int(time.time())
        garbage, freed = await self.disk.run(self.engine.garbage, now, grace_seconds)
        sizes: dict[str, int] = {}
        for _, size, chunk_size, packed in garbage.blobs:
            ids = unpack_chunk_ids(packed)
            for i, cid in enumerate(ids):
                if cid in freed:
                    sizes[cid] = min(chunk_size, size - i * chunk_size)
        replication, _ = replication_factors(self.config, placed)
        nodes: dict[str, dict[str, int]] = {m.node_id: {"chunks": 0, "bytes": 0} for m in placed}
        for cid, size in sizes.items():
            for owner in owners(cid, placed, replication):
                nodes[owner.node_id]["chunks"] += 1
                nodes[owner.node_id]["bytes"] += size
        return {"dry_run": True, "now": now, "grace_seconds": grace_seconds,
                "links": len(garbage.links), "blobs": len(garbage.blobs),
                "bytes": garbage.bytes, "chunks": len(sizes), "nodes": nodes}

    async def _schedule(self) -> None:
        """Every `gc_interval`, the leader collects with `gc_grace`."""
        if self.config.gc_interval <= 0:
            return
        while True:
            await trio.sleep(self.config.gc_interval)
            if self.engine.leader() != self.config.node_id:
                continue
            try:
                detail = await self.collect(int(self.config.gc_grace))
            except (NoQuorum, Refused) as exc:
                log.warning("scheduled garbage collection not made: %s", exc)
                continue
            log.info("garbage collection %s", json.dumps(detail))
            if self._on_collected is not None:
                self._on_collected(detail)

    # -- step 2: the chunk sweep ---------------------------------------------------

    def _read_swept(self) -> int:
        try:
            return int(self.data.gc_swept.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    async def _watch(self) -> None:
        attempts = 0
        while True:
            epoch = self.engine.queries.gc_epoch()
            self.status.epoch = epoch
            if epoch <= self.status.swept_epoch:
                attempts = 0
                await trio.sleep(WATCH_SECONDS)
                continue
            try:
                spared = await self.sweep(epoch)
            except NoQuorum:
                await trio.sleep(WATCH_SECONDS)
                continue
            attempts += 1
            if spared and attempts < SWEEP_ATTEMPTS:
                # Chunks a push touched lately: once their grace passed, if still unused,
                # the next sweep frees them.
                await trio.sleep(self.chunks.grace_seconds)
                continue
            await self.disk.run(write_durably, self.data.gc_swept, str(epoch).encode(),
                                self.data.tmp)
            self.status.swept_epoch = epoch

    async def sweep(self, epoch: int) -> int:
        """Delete the chunks on this node no recipe uses; returns how many unreferenced
        stored chunks were spared because a push touched them within the grace."""
        status = self.status
        status.state, status.last_started = "sweeping", time.time()
        started = time.monotonic()
        freed_chunks = freed_bytes = spared = 0
        try:
            referenced, read_at = await self._read_referenced()
            stored = await self.disk.run(lambda: list(self.chunks.stored_ids()))
            cached = self.chunks.cached_ids()
            status.examined, status.to_examine = 0, len(stored) + len(cached)
            rate = self.config.gc_sweep_chunks_per_second
            # Batches of a tenth of a second's worth, so the pace holds for small sweeps too.
            step = min(SWEEP_BATCH, max(1, rate // 10)) if rate else SWEEP_BATCH
            for source, batch_of in ((stored, self._drop_stored), (cached, self._drop_cached)):
                for i in range(0, len(source), step):
                    if time.monotonic() - read_at > self.chunks.grace_seconds / 4:
                        referenced, read_at = await self._read_referenced()
                    batch = source[i : i + step]
                    chunks, size, kept = await batch_of(batch, referenced)
                    freed_chunks += chunks
                    freed_bytes += size
                    spared += kept
                    status.examined += len(batch)
                    await trio.sleep(len(batch) / rate if rate else 0)
        finally:
            status.state = "idle"
        status.sweeps += 1
        status.last_chunks_freed, status.last_bytes_freed = freed_chunks, freed_bytes
        status.last_spared = spared
        status.last_finished = time.time()
        status.last_duration_seconds = time.monotonic() - started
        log.info("gc sweep of epoch %d freed %d chunks (%d bytes), spared %d", epoch,
                 freed_chunks, freed_bytes, spared)
        return spared

    async def _read_referenced(self) -> tuple[set[str], float]:
        """The chunks the recipes use, read after a barrier, and when (monotonic).

        A recipe committed after the barrier was confirmed, so touched, just before
        its proposal; the sweep reads again before the snapshot is a quarter of the
        touch grace old, so a chunk unused in it and untouched for the whole grace
        cannot belong to a recipe committed since.
        """
        read_at = time.monotonic()
        await self.engine.barrier()
        return await self.disk.run(self._referenced), read_at

    def _referenced(self) -> set[str]:
        return {cid for chunk_ids in self.engine.blob_chunk_lists() for cid in chunk_ids}

    async def _drop_stored(self, batch: list[str], referenced: set[str]) -> tuple[int, int, int]:
        dropped, kept = await self.disk.run(self.chunks.drop_unreferenced, batch, referenced)
        size = sum(s for _, s in dropped)
        self.status.chunks_freed += len(dropped)
        self.status.bytes_freed += size
        return len(dropped), size, sum(1 for cid in kept if cid not in referenced)

    async def _drop_cached(self, batch: list[str], referenced: set[str]) -> tuple[int, int, int]:
        dropped = await self.disk.run(self.chunks.drop_cached, batch, referenced)
        size = sum(s for _, s in dropped)
        self.status.cached_chunks_freed += len(dropped)
        self.status.cached_bytes_freed += size
        return len(dropped), size, 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The schedule and the sweep, for as long as the node runs."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._schedule)
            nursery.start_soon(self._watch)
            task_status.started()
