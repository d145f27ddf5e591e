"""Liveness and readiness: what `/healthz` and `/readyz` answer.

A load balancer, the compose healthcheck and `scripts/chaos` send traffic to
a node only once it can serve it correctly: it belongs to a group that has a
leader, it has applied everything that group committed before the check (a
read barrier, so a node that restarted behind the others is not ready until
it caught up), and its disk takes a durable write. Each check is bounded in
time, so a stopped disk or a lost quorum makes the node not ready instead of
making the probe hang. Liveness only says the process answers HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from consensus.engine import Engine
from node.storage.layout import FreeSpaceFloor

CHECK_SECONDS = 2.0  # each check's budget; probes usually run every few seconds


@dataclass
class Readiness:
    """Checks this node's readiness; `check()` returns (ready, report)."""

    node_id: str
    engine: Engine
    probe_dir: Path  # in the data directory: where the disk check writes
    on_disk: Callable[..., Awaitable[Any]]  # blocking work in a bounded worker thread
    floor: FreeSpaceFloor  # the free disk pushes keep (the chunk store's)
    timeout: float = CHECK_SECONDS
    _probe_lock: trio.Lock = field(default_factory=trio.Lock)

    async def check(self) -> tuple[bool, dict[str, Any]]:
        failures: list[str] = []
        if self.node_id not in self.engine.voters():
            failures.append("not a voting member of the group")
        if self.engine.leader() is None:
            failures.append("the group has no leader this node knows of")
        elif not await self._caught_up():
            failures.append("could not catch up with the leader's commit index in time")
        disk_failure, free = await self._disk_writable()
        if disk_failure:
            failures.append(disk_failure)
        status = self.engine.status()  # read after the barrier: the applied index it reached
        report = {
            "node_id": self.node_id,
            "ready": not failures,
            "leader": status["leader"],
            "term": status["term"],
            "commit_index": status["commit_index"],
            "applied_index": status["applied_index"],
            "free_bytes": free,
            # Below the floor pushes get 507, but pulls are still served: not a failure.
            "low_on_space": free is not None and 0 < free < self.floor.min_free_bytes,
            "failures": failures,
        }
        return not failures, report

    async def _caught_up(self) -> bool:
        with trio.move_on_after(self.timeout):
            try:
                await self.engine.barrier()
            except Exception:  # no quorum, no leader: the reason is "not ready"
                return False
            return True
        return False

    async def _disk_writable(self) -> tuple[str | None, int | None]:
        """(None, free bytes) when a small file can be written, fsynced and
        removed in time; else (why not, None)."""
        # One probe at a time: a hung disk must not pile up worker threads.
        if self._probe_lock.locked():
            return "the previous disk check has not finished", None
        async with self._probe_lock:
            with trio.move_on_after(self.timeout):
                try:
                    free = await self.on_disk(_probe_write, self.probe_dir, self.floor)
                except OSError as exc:
                    return f"data directory not writable: {exc.strerror or exc}", None
                return None, free
            return f"disk write took more than {self.timeout:g} s", None


def _probe_write(folder: Path, floor: FreeSpaceFloor) -> int:
    """Write, fsync and remove a probe file; returns the free bytes left."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".ready-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ready\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return floor.free_bytes()
