"""The repair loop: every node fetches the chunks placement gives it and lacks, and
deletes the copies it holds but does not own once their owners hold them.

A pass reads every recipe in a worker thread and sorts the referenced chunks:
those placement gives this node and its store lacks are *needed* (a node lost
for good, a node that joined, a push that missed an owner that was down); those
it stores but does not own are *unowned* (hinted copies, copies a membership
change moved away). A needed chunk is promoted from this node's cache when it
is there, else fetched from its holders, a few at a time, the bytes paced by
`repair_bytes_per_second` so client traffic keeps priority. Unreferenced
chunks are left alone: an upload not committed yet may be about to use them.
A pass runs at start, at once when the membership changes (ids, zones,
draining flags; checked every second) or a peer comes back up, every
`repair_interval_seconds`, when this node catches up with the log, and 5 s
after a pass that left work undone (doubling up to a minute while passes make
no progress: a chunk no holder has, an owner that stays down). A membership
change also ends the pass under way: its plan is out of date.

Deleting an unowned copy is safe by this protocol. The node asks each of the
chunk's R owners (in its own view of the membership) to confirm it; an owner
answers "held" only for a copy stored durably (not cached, not still landing),
and that answer touches the copy, which then cannot be deleted on the owner
for `grace_seconds` (G): the check, the touch and every delete take the
store's lock. The asking node deletes its copy only if all R owners said
"held", only within G/2 of sending the question, and only if its own copy was
not touched within G (`ChunkStore.drop_unowned`). So at the moment of any
delete, R other copies exist that cannot go before that moment has passed,
and the number of copies never falls below R through deletes. Two nodes A
and B with different views, each counting the other as an owner and asking it,
cannot both delete: if B's question reaches A before A deletes, it touches
A's copy and A's delete is refused; if it reaches A after, A answers "not
held" and B keeps its copy. Deletes are not fsynced: a copy that comes back
after a crash is one copy too many, which the next pass removes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from consensus.engine import Engine
from node.cluster.chunk_fetch import ChunkFetcher
from node.cluster.errors import ClusterError
from node.cluster.peers import Peers
from node.cluster.placement import Placed, owners
from node.cluster.replication import replication_factors
from node.config import Config
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.errors import StorageError

log = logging.getLogger(__name__)

IN_FLIGHT = 4  # chunks fetched at once by one node's repair
CONFIRM_GROUP = 500  # unowned chunks whose owners are asked, then dropped, together
MEMBERSHIP_POLL = 1.0  # seconds between looks at the member list
RETRY_FIRST = 5.0  # seconds before the pass after one that left work undone
RETRY_MAX = 60.0  # ... growing to this while passes make no progress


def membership_signature(members: Sequence[Placed]) -> tuple[tuple[Any, ...], ...]:
    """What placement depends on: ids, zones and draining flags."""
    return tuple(sorted(
        (m.node_id, m.zone, bool(getattr(m, "draining", False))) for m in members
    ))


class BytePace:
    """Bytes per second for a stream of transfers: each waits for its slot in a
    schedule (no burst), a size known only afterwards corrected then; 0 = no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0  # trio time at which the next transfer may start

    async def take(self, size: int) -> None:
        if self.rate <= 0:
            return
        start = max(trio.current_time(), self._next)
        self._next = start + size / self.rate
        await trio.sleep_until(start)

    def correct(self, difference: int) -> None:
        """Bytes more (or fewer) than taken moved: shift the schedule by them."""
        if self.rate > 0:
            self._next += difference / self.rate


@dataclass
class RepairStatus:
    """What `cluster status` shows of the repair loop (field names are an interface)."""

    state: str = "idle"  # "idle" or "repairing"
    passes: int = 0
    owned_missing_chunks: int | None = None  # None until the first scan finished
    owned_missing_bytes: int | None = None
    owned_chunks: int | None = None
    unowned_held_chunks: int | None = None
    repaired_chunks: int = 0
    repaired_bytes: int = 0
    promoted_chunks: int = 0  # of the repaired, taken from this node's cache: no fetch
    dropped_chunks: int = 0
    dropped_bytes: int = 0
    rate_bytes_per_second: float | None = None
    last_pass_started: float | None = None  # unix time
    last_pass_finished: float | None = None
    last_pass_complete: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        del doc["owned_chunks"]
        rate, missing = self.rate_bytes_per_second, self.owned_missing_bytes
        if missing == 0:
            doc["eta_seconds"] = 0.0
        elif missing is None or not rate:
            doc["eta_seconds"] = None
        else:
            doc["eta_seconds"] = round(missing / rate, 1)
        if rate is not None:
            doc["rate_bytes_per_second"] = round(rate)
        return doc


@dataclass
class PassPlan:
    """One scan's result: what this node owns, lacks, and holds without owning."""

    owned: int = 0
    need: list[str] = field(default_factory=list)
    unowned: dict[str, list[str]] = field(default_factory=dict)  # id → its owners' ids


class PassStopped(Exception):
    """The membership changed during a pass: it ends so a new one starts at once."""


@dataclass
class Repairer:
    config: Config
    engine: Engine
    chunks: ChunkStore
    peers: Peers
    fetcher: ChunkFetcher
    disk: DiskThreads
    bytes_per_second: float
    interval_seconds: float
    status: RepairStatus = field(default_factory=RepairStatus)
    _signature: tuple[tuple[Any, ...], ...] = ()
    _changed: trio.Event = field(default_factory=trio.Event)
    _last_sizes: tuple[int, int] | None = None  # (needed, unowned) of the last pass's plan

    @property
    def me(self) -> str:
        return self.config.node_id

    def live_report(self) -> dict[str, int] | None:
        """The replication report from the live numbers of the pass under way; None
        between passes, when pushes since the last one may have changed them."""
        status = self.status
        if (
            status.state != "repairing"
            or status.owned_missing_chunks is None
            or status.owned_chunks is None
        ):
            return None
        return {"owned": status.owned_chunks, "missing": status.owned_missing_chunks}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self._signature = membership_signature(self.peers.placed())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_membership)
            delay = RETRY_FIRST
            while True:
                self._changed = trio.Event()
                before = (self.status.repaired_chunks, self.status.dropped_chunks)
                complete = await self.repair_pass()
                progressed = before != (self.status.repaired_chunks, self.status.dropped_chunks)
                if complete:
                    wait, delay = self.interval_seconds, RETRY_FIRST
                else:
                    wait = RETRY_FIRST if progressed else delay
                    delay = RETRY_FIRST if progressed else min(2 * delay, RETRY_MAX)
                with trio.move_on_after(min(wait, self.interval_seconds)):
                    await self._changed.wait()

    async def _watch_membership(self) -> None:
        """Wake the loop when the membership changes, when a peer comes back up (it may
        now confirm copies, or provide chunks, that it could not a moment ago), and
        when this node has caught up with the log (after a restart or a partition,
        recipes committed meanwhile name chunks it owns and was never sent)."""
        up = {p for p in self.peers.state if self.peers.is_up(p)}
        behind = True
        while True:
            signature = membership_signature(self.peers.placed())
            now_up = {p for p in self.peers.state if self.peers.is_up(p)}
            raft = self.engine.status()
            # Behind from start or from losing the leader, until the log is applied (a
            # moment's lag while it applies a busy stream of pushes does not count).
            caught_up = raft["leader"] is not None and raft["applied_index"] >= raft["commit_index"]
            woken = signature != self._signature or now_up - up or (behind and caught_up)
            if woken:
                self._signature = signature
                self._changed.set()
            behind = raft["leader"] is None or (behind and not caught_up)
            up = now_up
            await trio.sleep(MEMBERSHIP_POLL)

    def _check_membership(self, signature: tuple[tuple[Any, ...], ...]) -> None:
        """PassStopped once the watcher saw the membership move on from `signature`."""
        if self._signature != signature:
            raise PassStopped()

    async def repair_pass(self) -> bool:
        """One pass over every recipe; True when nothing was left undone."""
        if not any(m.node_id == self.me for m in self.engine.members()):
            return False  # not a registered member (yet, or any more): owns nothing
        status = self.status
        members = self.peers.placed()
        # The watcher compares against what this pass plans with from now on.
        signature = self._signature = membership_signature(members)
        replication, _ = replication_factors(self.config, len(members))
        status.state = "repairing"
        status.last_pass_started = time.time()
        before = (status.repaired_chunks, status.repaired_bytes, status.dropped_chunks)
        complete = quiet = False
        try:
            plan = await self.disk.run(self._scan, members, replication)
            status.owned_chunks = plan.owned
            status.owned_missing_chunks = len(plan.need)
            status.owned_missing_bytes = len(plan.need) * self.config.chunk_size
            status.unowned_held_chunks = len(plan.unowned)
            # A pass that changes nothing, like the last, says so only at debug level;
            # one that does says it once, at its end.
            sizes = (len(plan.need), len(plan.unowned))
            quiet = sizes == self._last_sizes
            self._last_sizes = sizes
            if plan.need or plan.unowned:
                log.debug(
                    "repair: pass started: %d chunks owned and missing, %d held unowned",
                    len(plan.need), len(plan.unowned),
                )
            fetched_all = await self._fetch_needed(plan.need, signature)
            kept = await self._drop_unowned(plan.unowned, signature)
            status.unowned_held_chunks = kept
            complete = fetched_all and kept == 0
        except PassStopped:
            log.debug("repair: membership changed; pass restarts")  # the change logs itself
        finally:
            status.state = "idle"
            status.passes += 1
            status.last_pass_finished = time.time()
            status.last_pass_complete = complete
        repaired = status.repaired_chunks - before[0]
        dropped = status.dropped_chunks - before[2]
        if repaired or dropped:
            self._last_sizes = None
        if repaired or dropped or (not complete and not quiet):
            log.info(
                "repair: pass %s: %d chunks repaired (%d bytes), %d unowned copies dropped, "
                "%s owned chunks still missing, %s unowned held",
                "complete" if complete else "incomplete", repaired,
                status.repaired_bytes - before[1], dropped, status.owned_missing_chunks,
                status.unowned_held_chunks,
            )
        return complete

    def _scan(self, members: list[Placed], replication: int) -> PassPlan:
        """Blocking: read the store and every recipe, sort chunks into needed and unowned.

        Memory follows this node's share, not the cluster's: the ids it stores,
        and those it owns.
        """
        stored = set(self.chunks.stored_ids())
        owned: set[str] = set()
        plan = PassPlan()
        me = self.me
        for chunk_ids in self.engine.blob_chunk_lists():
            for cid in chunk_ids:
                if cid in owned or cid in plan.unowned:
                    continue
                chunk_owners = [m.node_id for m in owners(cid, members, replication)]
                if me in chunk_owners:
                    owned.add(cid)
                    # Listed before the recipes: a chunk stored since is checked again.
                    if cid not in stored and not self.chunks.has(cid):
                        plan.need.append(cid)
                elif cid in stored:
                    plan.unowned[cid] = chunk_owners
        plan.owned = len(owned)
        return plan

    # -- needed chunks ---------------------------------------------------------

    async def _fetch_needed(self, need: list[str], signature: tuple[tuple[Any, ...], ...]) -> bool:
        """Promote or fetch every needed chunk; True when all arrived."""
        if not need:
            self.status.rate_bytes_per_second = None
            return True
        pace = BytePace(self.bytes_per_second)
        queue: Iterator[str] = iter(need)
        began = trio.current_time()
        moved = 0
        failed = 0
        stopped = False

        async def worker() -> None:
            nonlocal moved, failed, stopped
            for cid in queue:
                if stopped or self._signature != signature:
                    stopped = True
                    return
                size = await self._repair_one(cid, pace)
                if size is None:
                    failed += 1
                    continue
                moved += size
                status = self.status
                status.repaired_chunks += 1
                status.repaired_bytes += size
                status.owned_missing_chunks = max(0, (status.owned_missing_chunks or 0) - 1)
                status.owned_missing_bytes = max(
                    0, (status.owned_missing_bytes or 0) - self.config.chunk_size
                )
                if not status.owned_missing_chunks:
                    status.owned_missing_bytes = 0
                elapsed = trio.current_time() - began
                if elapsed > 0:
                    status.rate_bytes_per_second = moved / elapsed

        async with trio.open_nursery() as nursery:
            for _ in range(IN_FLIGHT):
                nursery.start_soon(worker)
        if stopped:
            raise PassStopped()
        return failed == 0

    async def _repair_one(self, cid: str, pace: BytePace) -> int | None:
        """Make one needed chunk stored here; its size, or None when no copy came."""
        try:
            promoted = await self.disk.run(self.chunks.promote, cid)
            if promoted is not None:
                self.status.promoted_chunks += 1
                return promoted
            expected = self.config.chunk_size
            await pace.take(expected)
            data = await self.fetcher.fetch_from_holders(cid)
            pace.correct(len(data) - expected)
            await self.disk.run(self.chunks.put, cid, data)
            return len(data)
        except (ClusterError, StorageError, OSError) as exc:
            log.debug("repair: chunk %s not repaired this pass: %r", cid, exc)
            return None

    # -- unowned copies --------------------------------------------------------

    async def _drop_unowned(
        self, unowned: dict[str, list[str]], signature: tuple[tuple[Any, ...], ...]
    ) -> int:
        """Delete the unowned copies all of whose owners confirm theirs; how many are kept."""
        kept = 0
        cids = list(unowned)
        for start in range(0, len(cids), CONFIRM_GROUP):
            self._check_membership(signature)
            group = cids[start : start + CONFIRM_GROUP]
            confirmed_at = time.monotonic()
            acks = await self._confirm(group, unowned)
            ready = [cid for cid in group if acks.get(cid, 0) >= len(unowned[cid])]
            dropped = await self.disk.run(self.chunks.drop_unowned, ready, confirmed_at)
            self.status.dropped_chunks += len(dropped)
            self.status.dropped_bytes += sum(size for _, size in dropped)
            kept += len(group) - len(dropped)
        return kept

    async def _confirm(self, group: list[str], unowned: dict[str, list[str]]) -> dict[str, int]:
        """How many of its owners confirmed a durable copy of each chunk of `group`."""
        by_owner: dict[str, list[str]] = {}
        for cid in group:
            for owner in unowned[cid]:
                by_owner.setdefault(owner, []).append(cid)
        acks: dict[str, int] = {}

        async def ask(owner: str, cids: list[str]) -> None:
            asked = set(cids)
            try:
                async for answer in self.peers.chunk_list_answers(owner, "confirm", cids):
                    held = answer.get("held")
                    for cid in held if isinstance(held, list) else ():
                        if isinstance(cid, str) and cid in asked:
                            asked.discard(cid)  # one owner counts once
                            acks[cid] = acks.get(cid, 0) + 1
            except ClusterError as exc:
                log.debug("repair: %s did not confirm chunks: %s", owner, exc)

        async with trio.open_nursery() as nursery:
            for owner, cids in by_owner.items():
                if owner != self.me and self.peers.is_up(owner):
                    nursery.start_soon(ask, owner, cids)
        return acks

