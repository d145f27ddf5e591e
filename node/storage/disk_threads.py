"""The worker threads one node uses for blocking disk work, and their bounds.

The event loop never waits on the disk: reads, writes and hashing of chunk
files run in trio's worker threads, at most `workers` at once, through `run`.
The upload spool also hands full chunks to a small pool of fsync threads (so
the disk flushes one chunk while the next streams in) and feeds the
whole-blob digest from a pool of digest threads beside the write. Both pools
belong to one node: `serve` creates them with the node and closes them when
the node stops, so nodes sharing a process (the tests) never share threads
and a stopped node leaves none behind.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import trio

T = TypeVar("T")

FSYNC_THREADS = 4
DIGEST_THREADS = 4


class DiskThreads:
    """Bounded blocking disk work for one node: `run` from trio, two pools for the spool."""

    def __init__(self, workers: int) -> None:
        self.limiter = trio.CapacityLimiter(workers)
        self.fsync = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="flotilla-fsync")
        self.digest = ThreadPoolExecutor(DIGEST_THREADS, thread_name_prefix="flotilla-digest")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work in a worker thread, bounded by this node's limiter."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def close(self) -> None:
        """Let queued flushes finish (each closes its file) and stop both pools."""
        self.fsync.shutdown(wait=True)
        self.digest.shutdown(wait=True)
