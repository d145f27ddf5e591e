"""How many copies of a chunk the cluster keeps (R) and how many a push waits for (W).

Both come from the configuration, capped by the membership as it is: a
cluster of two cannot keep three copies, and a push can never wait for more
holders than there are copies. Placement, pulls and the replication report
all take their numbers from here, so they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from consensus.engine import Engine
from node.cluster.peers import Peers
from node.cluster.placement import Placed, eligible, owners
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads


def replication_factors(config: Config, members: int | Sequence[Placed]) -> tuple[int, int]:
    """(R, W): R capped at the member count, W at R. Given the members themselves,
    only those that may own chunks count (a draining member holds no replica)."""
    count = members if isinstance(members, int) else len(eligible(members))
    r = max(1, min(config.replication, count))
    w = max(1, min(config.write_quorum or r, r))
    return r, w


class ReplicationReport:
    """How many chunks placement gives this node, and how many of them it lacks.

    Summed over the members, `missing` is the number of chunk copies the
    cluster is short of (under-replication): what `flotilla cluster status`
    shows an operator. While a repair pass runs, its live numbers answer (they
    fall as it fetches, so an operator can watch them); between passes a scan
    of every recipe does, its answer reused for `max_age` seconds, so blobs
    pushed since the last pass count too.
    """

    def __init__(
        self, config: Config, engine: Engine, peers: Peers, chunks: ChunkStore, disk: DiskThreads,
        live: Callable[[], dict[str, int] | None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.peers = peers
        self.chunks = chunks
        self.disk = disk
        self.live = live
        self._last: tuple[float, dict[str, int]] | None = None

    async def __call__(self, max_age: float = 5.0) -> dict[str, int]:
        """{"owned", "missing"} of this node, and "on_unreachable": the copies placement
        gives to members this node sees down. Those are missing too while the member
        stays away, but only the member can count them exactly (the copies it had);
        this is what the answering node can say for it: the copies it owes."""
        now = trio.current_time()
        if self._last is None or now - self._last[0] >= max_age:
            self._last = (now, await self._scan())
        return self.latest()

    def latest(self) -> dict[str, int]:
        """The newest numbers known without a scan (for a metrics scrape): the last
        scan's, however old, with the live numbers of a pass under way over them;
        empty before the first scan and pass."""
        report = dict(self._last[1]) if self._last is not None else {}
        if self.live is not None and (live := self.live()) is not None:
            report.update(live)
        return report

    async def _scan(self) -> dict[str, int]:
        members = self.peers.placed()
        replication, _ = replication_factors(self.config, members)
        me = self.config.node_id
        down = {m.node_id for m in members if not self.peers.is_up(m.node_id)}

        def scan() -> dict[str, int]:
            owned = missing = unreachable = 0
            for chunk_ids in self.engine.blob_chunk_lists():
                for cid in chunk_ids:
                    holders = {m.node_id for m in owners(cid, members, replication)}
                    unreachable += len(holders & down)
                    if me in holders:
                        owned += 1
                        if not self.chunks.has(cid):
                            missing += 1
            return {"owned": owned, "missing": missing, "on_unreachable": unreachable}

        return await self.disk.run(scan)
