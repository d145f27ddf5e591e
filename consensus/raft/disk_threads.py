"""Raft's worker threads for blocking disk work, counted against one limiter.

Saving to the write-ahead log, applying a large batch and all snapshot work
block on the disk, so they run in worker threads — never on trio's default
limiter but on the one the engine hands over, so Raft holds at most that many
threads however many snapshots are in flight. Snapshot work running beside
the Ready loop (copying the state, writing, streaming and receiving snapshot
files) takes at most all but one of those threads, so a save or an apply of
the loop never waits for a large database copy to finish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class DiskThreads:
    """Runs blocking calls in worker threads bounded by `limiter`."""

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self._beside_loop = trio.CapacityLimiter(max(1, int(limiter.total_tokens) - 1))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, for the Ready loop's own disk work."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def run_beside_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, for snapshot work running beside the loop."""
        async with self._beside_loop:
            return await self.run(fn, *args)
