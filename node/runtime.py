"""What a running node is made of, handed to every request handler.

One object holds this node's configuration, disk, upload spool and
metadata engine, plus the limiter that bounds worker threads doing blocking
disk work, so the event loop itself never waits on the disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from consensus.engine import Engine
from node.cluster.auth import Verifier
from node.config import Config
from node.storage.chunks import ChunkStore
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
    disk: trio.CapacityLimiter
    secret: bytes
    peer_auth: Verifier
    counters: Counter[str] = field(default_factory=Counter)

    async def fresh_reads(self) -> None:
        """With `consistency = "linearizable"`, make the next local read linearizable."""
        if self.config.consistency == "linearizable":
            await self.engine.barrier()

    async def on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work in a bounded worker thread."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.disk)
