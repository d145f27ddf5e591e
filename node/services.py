"""The services of one running node, built by `node.app` and handed to every handler.

A plain bundle, no logic of its own: the configuration, the data directory,
the chunk store and upload spool, the metadata engine, peers, the blob writer
and reader that pushes and pulls go through, the replication report, the
background scrub, repair loop and garbage collector, and the bounded worker threads that do
blocking disk work so the event loop never waits on the disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from consensus.engine import Engine
from node.access.gate import Gate
from node.cluster.auth import Verifier
from node.cluster.blob_reader import BlobReader
from node.cluster.blob_writer import BlobWriter
from node.cluster.cluster_tls import ClusterTLS
from node.cluster.gc import GarbageCollector
from node.cluster.peers import Peers
from node.cluster.repair import Repairer
from node.cluster.replication import ReplicationReport
from node.cluster.scrub import Scrubber
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.layout import DataDir
from node.storage.spool import Spool

T = TypeVar("T")


@dataclass
class NodeServices:
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
    replication_report: ReplicationReport
    scrubber: Scrubber
    repairer: Repairer
    gate: Gate
    gc: GarbageCollector
    counters: Counter[str] = field(default_factory=Counter)
    cluster_tls: ClusterTLS | None = None  # encryption between nodes, when on

    async def on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work in a bounded worker thread (the node's `DiskThreads`)."""
        return await self.disk.run(fn, *args)
