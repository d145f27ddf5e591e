"""What a running node is made of, handed to every request handler.

One object holds this node's configuration, disk, upload spool and
metadata engine, the blob writer and reader that pushes and pulls go
through, plus the worker threads (bounded) that do blocking disk work, so
the event loop itself never waits on the disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from consensus.engine import Engine
from node.cluster.auth import Verifier
from node.cluster.blob_reader import BlobReader
from node.cluster.blob_writer import BlobWriter
from node.cluster.peers import Peers
from node.cluster.placement import owners
from node.cluster.replication import replication_factors
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.layout import DataDir
from node.storage.spool import Spool

T = TypeVar("T")


@dataclass
class NodeRuntime:
    config: Config
    data: DataDir
    chunks: ChunkStore
    spool: Spool
    engine: Engine
    disk: DiskThreads
    secret: bytes
    peer_auth: Verifier
    peers: Peers
    blob_writer: BlobWriter
    blob_reader: BlobReader
    counters: Counter[str] = field(default_factory=Counter)

    _replication: tuple[float, dict[str, int]] | None = None

    async def replication_report(self, max_age: float = 30.0) -> dict[str, int]:
        """How many chunks placement gives this node, and how many of them it lacks.

        Summed over the members, `missing` is the number of chunk copies the
        cluster is short of (under-replication); repair will work it down.
        """
        now = trio.current_time()
        if self._replication is not None and now - self._replication[0] < max_age:
            return self._replication[1]
        members = self.peers.placed()
        replication, _ = replication_factors(self.config, len(members))
        me = self.config.node_id

        def scan() -> dict[str, int]:
            owned = missing = 0
            for chunk_ids in self.engine.blob_chunk_lists():
                for cid in chunk_ids:
                    if any(m.node_id == me for m in owners(cid, members, replication)):
                        owned += 1
                        if not self.chunks.has(cid):
                            missing += 1
            return {"owned": owned, "missing": missing}

        report = await self.on_disk(scan)
        self._replication = (now, report)
        return report

    async def on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work in a bounded worker thread (the node's `DiskThreads`)."""
        return await self.disk.run(fn, *args)
