"""The Raft driver: runs the pure core on trio over a log, a transport and an applier.

One task owns the `RaftNode`. Everything that would touch it — ticks,
messages from peers, proposals, read requests, membership changes — is put
in an inbox and handed to the core by that task between two `Ready` batches,
so the core never sees concurrent calls. Each batch is handled in the order
`ready.py` plans: install a received snapshot, send a leader's early
appends, append entries and hard state to the write-ahead log (one fsync for
the whole batch: group commit), send the other messages, apply committed
entries through the `Applier`, answer ReadIndex requests. The driver knows
entries only as bytes at log indexes: it reports what applying them produced
to `on_applied` and a change of leader to `on_leader_change`, and whoever
waits for a particular command matches the results itself. Requests only
the leader can take go through `forwarding.py`; snapshots are taken, sent,
received and installed by `snapshots.py`.

What the driver holds is bounded in bytes. A snapshot is taken every
`snapshot_every` applied entries or as soon as the applied entries still in
the log pass `snapshot_bytes`, whichever comes first, so the log in memory and
on disk stays near that size however large the entries are; a leader
whose log still reaches twice that (writes come faster than snapshots) takes
no proposals until the snapshot under way has freed it. Proposals waiting in
the inbox count against the core's `max_uncommitted_bytes` beside its
uncommitted entries. A proposal refused for either reason raises
`ProposalsBackedUp` from `propose` at once, or, forwarded by a follower, is
dropped (its proposer retries); no queue grows instead. Entries arriving in
peers' messages count too: past `MAX_QUEUED_MESSAGE_BYTES` waiting for the
loop, the next such frame waits, and with it the connection that brought it,
so a leader streaming appends to a busy follower is pushed back by TCP.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from consensus.raft.applier import Applier
from consensus.raft.core import (
    MAX_APPEND_BYTES,
    MAX_UNCOMMITTED_BYTES,
    ProposalsBackedUp,
    RaftNode,
    Ready,
    Role,
    Status,
)
from consensus.raft.disk_threads import DiskThreads
from consensus.raft.errors import InvalidCompaction, MalformedMessage, NotLeader, StorageFull
from consensus.raft.forwarding import FORWARDED, Forwarder
from consensus.raft.membership import ConfChange, ConfChangeEntry
from consensus.raft.messages import Message, MessageType
from consensus.raft.ready import (
    ApplyCommitted,
    DeliverReads,
    InstallSnapshot,
    ObserveRole,
    SaveToLog,
    SendMessages,
    plan_ready,
)
from consensus.raft.snapshots import Snapshots, open_log
from consensus.raft.timings import Timings
from consensus.raft.transport import PeerTransport
from consensus.raft.types import Entry, EntryKind, HardState, SnapshotMeta

log = logging.getLogger(__name__)

# On a disk whose saves take less than this, a save blocks the loop instead of
# going to a thread: the hop to the thread and back costs more than the fsync.
INLINE_SAVE_SECONDS = 0.002
# A committed batch this small is applied on the loop: no fsync (the state is
# rebuilt from the log after a crash), so it is quicker than the thread hop.
INLINE_APPLY_ENTRIES = 64
FULL_RETRY_SECONDS = 0.5  # first wait for room on a full disk, doubled up to the next
FULL_RETRY_MAX_SECONDS = 5.0
T = TypeVar("T")
# How long one ReadIndex request may wait for its answer before it is asked again.
READ_INDEX_WAIT = 1.0
# Applied entry data the log may hold before a snapshot is taken, whatever
# their count. With the refusals past twice this, it bounds the log in memory
# and, as compaction unlinks whole write-ahead segments, on disk. Each
# snapshot copies the whole state, so smaller means more copying: 64 MiB is
# eight of the largest manifest entries, and small beside a node's memory.
SNAPSHOT_BYTES = 64 << 20
# Entry data of peers' messages that may wait in the inbox for the loop (a
# save or an apply in progress) before the transport stops reading more.
MAX_QUEUED_MESSAGE_BYTES = 4 * MAX_APPEND_BYTES


def _ignore(*_: Any) -> None:
    pass


def _accept_any(data: bytes) -> bool:
    return True


def bootstrap_voters(node_id: str, peers: dict[str, str], join: bool) -> tuple[str, ...]:
    """The voters a member starts with when its log holds no configuration yet.

    Joining (`join`, or peers that do not list this node) starts with none
    and waits to be added: it learns the group from the leader instead of
    forming a group of its own.
    """
    if join or (peers and node_id not in peers):
        return ()
    return tuple(sorted({*peers, node_id}))


class RaftDriver:
    """One member of a Raft group, driven on trio.

    `peers` are the bootstrap addresses (id -> `host:port`), used for voters
    whose address the applier does not know yet. `limiter` bounds every
    worker thread the driver starts. `accept_proposal` says whether the
    bytes of a proposal forwarded by another member may be appended.
    """

    def __init__(
        self,
        node_id: str,
        *,
        applier: Applier,
        transport: PeerTransport,
        wal_dir: Path,
        snapshot_dir: Path,
        incoming_dir: Path,
        limiter: trio.CapacityLimiter,
        peers: dict[str, str] | None = None,
        join: bool = False,
        tick_seconds: float = 0.1,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        snapshot_every: int = 10_000,
        snapshot_bytes: int = SNAPSHOT_BYTES,
        max_append_bytes: int = MAX_APPEND_BYTES,
        max_uncommitted_bytes: int = MAX_UNCOMMITTED_BYTES,
        on_applied: Callable[[list[Any]], None] = _ignore,
        on_leader_change: Callable[[], None] = _ignore,
        accept_proposal: Callable[[bytes], bool] = _accept_any,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.applier = applier
        self.transport = transport
        self.bootstrap_peers = dict(peers or {})
        self.tick_seconds = tick_seconds
        self.election_ticks = election_ticks
        self.snapshot_every = snapshot_every
        self.snapshot_bytes = snapshot_bytes
        # A leader's log this large means snapshots fall behind the writes.
        self.max_log_bytes = 2 * snapshot_bytes
        self.on_applied = on_applied
        self.on_leader_change = on_leader_change
        self._threads = DiskThreads(limiter)

        self._wal, recovered = open_log(wal_dir, snapshot_dir, applier)
        self.applied = applier.applied_index
        # The commit index on disk may lag (a commit-only Ready is not saved), but
        # whatever was applied was committed, and it is in the log: start from there.
        hard_state = recovered.hard_state
        known_committed = min(self.applied, self._wal.last_index)
        if hard_state.commit < known_committed:
            hard_state = replace(hard_state, commit=known_committed)
        self.core = RaftNode(
            node_id,
            voters=bootstrap_voters(node_id, self.bootstrap_peers, join),
            hard_state=hard_state,
            entries=recovered.entries,
            snapshot=recovered.snapshot,
            rng=rng or random.Random(),
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            max_append_bytes=max_append_bytes,
            max_uncommitted_bytes=max_uncommitted_bytes,
            applied=self.applied,
        )
        # Voters as of the last applied membership change: a change counts once committed.
        self.committed_voters: tuple[str, ...] = self.core.voters
        self._forwarder = Forwarder(node_id, self.core, transport, accept_proposal)
        self._wal_lock = trio.Lock()
        self.snapshots = Snapshots(
            directory=snapshot_dir,
            incoming=incoming_dir,
            applier=applier,
            wal=self._wal,
            wal_lock=self._wal_lock,
            threads=self._threads,
            transport=transport,
            compact_core=self._compact_core,
            index=recovered.snapshot.index if recovered.snapshot else 0,
        )
        self._inbox: list[Callable[[], None]] = []
        # Entry data waiting in the inbox: of proposals, of peers' messages.
        self._queued = {"proposals": 0, "messages": 0}
        self._inbox_taken = trio.Event()  # fired each time the loop empties the inbox
        self.shed_proposals = 0  # forwarded proposals dropped for want of room
        self.storage_full = False  # waiting for room to save or apply (see _until_room)
        self._wakeup = trio.Event()
        self._applied_changed = trio.Event()
        self._leader_changed = trio.Event()
        self._reads: dict[bytes, list[int]] = {}  # ReadIndex context -> [index], once answered
        self._read_answered = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._save_seconds = 0.0  # moving average of the time a WAL save takes
        self._logged_leader: tuple[str | None, int] = (None, 0)  # (leader, term) last logged
        transport.on_frame = self._on_frame
        transport.on_learned = self._refresh_peers
        self._refresh_peers()

    # -- what the engine asks of the group --------------------------------------

    @property
    def leader(self) -> str | None:
        return self.core.leader

    @property
    def voters(self) -> tuple[str, ...]:
        return self.core.voters

    @property
    def snapshot_index(self) -> int:
        return self.snapshots.index

    @property
    def wal_fsync_seconds(self) -> Timings:
        return self._wal.fsync_seconds

    def status(self) -> Status:
        return self.core.status()

    def propose(self, data: bytes) -> None:
        """Hand `data` to the leader, best effort: the caller watches `on_applied`.

        Raises ProposalsBackedUp, having queued nothing, when the proposals
        waiting here and the leader's uncommitted entries leave no room.
        """
        if not self._has_room(len(data)):
            raise ProposalsBackedUp(
                f"the Raft log holds {self.core.log_bytes()} bytes, and "
                f"{self._queued['proposals']} bytes of proposals wait for it"
            )
        self._submit_counted("proposals", len(data), lambda: self._forwarder.propose(data))

    def change_voters(self, change: ConfChange) -> None:
        """Ask the leader for `change`, best effort: the caller watches `committed_voters`."""
        self._submit(lambda: self._forwarder.change_voters(change))

    def transfer_leadership(self, to: str) -> None:
        """Ask the leader to hand over to `to`, best effort: the caller watches `leader`."""
        self._submit(lambda: self._forwarder.transfer_leadership(to))

    async def read_index(self) -> int | None:
        """One ReadIndex request: the commit index the leader vouched for.

        None when no answer came in time or the leader changed meanwhile; the
        caller asks again.
        """
        context = os.urandom(12)
        answer = self._reads[context] = []
        try:
            self._submit(lambda: self._read_index(context))
            leader_changed = self._leader_changed
            with trio.move_on_after(READ_INDEX_WAIT):
                while not answer and not leader_changed.is_set():
                    await self._read_answered.wait()
        finally:
            self._reads.pop(context, None)
        return answer[0] if answer else None

    async def wait_applied(self, index: int) -> None:
        """Return once everything up to `index` is applied here."""
        while self.applied < index:
            await self._applied_changed.wait()

    async def wait_leader_change(self) -> None:
        await self._leader_changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run)
            if self.core.voters == (self.node_id,):
                # Alone in the group: nobody else can lead, so do not sit out an
                # election timeout before taking writes.
                for _ in range(2 * self.election_ticks):
                    self._submit(self.core.tick)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._loop)
            task_status.started()

    def close(self) -> None:
        self._wal.close()

    # -- the loop that owns the core ------------------------------------------

    def _submit(self, action: Callable[[], None]) -> None:
        self._inbox.append(action)
        self._wakeup.set()

    def _has_room(self, size: int) -> bool:
        """Whether a proposal of `size` bytes may be queued now (see the module's
        last paragraph); a follower leaves the log's size to its leader."""
        core = self.core
        if core.role is Role.LEADER and core.log_bytes() >= self.max_log_bytes:
            return False
        return core.accepts_proposal(size, self._queued["proposals"])

    def _submit_counted(self, kind: str, size: int, action: Callable[[], None]) -> None:
        """Queue `action`, whose `size` bytes count in `_queued[kind]` until the loop takes it."""
        self._queued[kind] += size

        def hand_over() -> None:
            self._queued[kind] -= size
            action()

        self._submit(hand_over)

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.tick_seconds)
            self._submit(self.core.tick)

    async def _loop(self) -> None:
        core = self.core
        assert self._nursery is not None
        while True:
            if not self._inbox and not core.has_ready():
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            inbox, self._inbox = self._inbox, []
            for action in inbox:
                action()
            self._inbox_taken = _fire(self._inbox_taken)
            if core.has_ready():
                rd = core.ready()
                await self._handle_ready(rd)
                core.advance(rd)
            # Checked on every pass, ticks included: a snapshot due while the
            # previous one ran starts once it is done, traffic or not.
            self.snapshots.start_if_due(self._nursery, self.applied, self._snapshot_interval())

    async def _handle_ready(self, rd: Ready) -> None:
        for step in plan_ready(rd, self._wal.hard_state.term):
            if isinstance(step, InstallSnapshot):
                await self._install_snapshot(step.meta)
            elif isinstance(step, SendMessages):
                self._send(step.messages)
            elif isinstance(step, SaveToLog):
                await self._save(step)
            elif isinstance(step, ApplyCommitted):
                await self._apply(step.entries)
            elif isinstance(step, DeliverReads):
                for read in step.read_states:
                    answer = self._reads.get(read.context)
                    if answer is not None and not answer:
                        answer.append(read.index)
                self._read_answered = _fire(self._read_answered)
            elif isinstance(step, ObserveRole):
                self._leader_changed = _fire(self._leader_changed)
                self._read_answered = _fire(self._read_answered)
                self.on_leader_change()
                self._log_leader(step.soft_state.leader, step.soft_state.role)

    def _log_leader(self, leader: str | None, role: Role) -> None:
        """One line per leader this member learns of (a role change alone, such as
        becoming a candidate, or losing the leader in an election, logs nothing)."""
        term = self.core.term
        if leader is None or (leader, term) == self._logged_leader:
            return
        self._logged_leader = (leader, term)
        if role is Role.LEADER:
            log.info("%s is leader (term %d)", self.node_id, term)
        else:
            log.info("leader is %s (term %d)", leader, term)

    async def _save(self, step: SaveToLog) -> None:
        # With appends in flight the save goes to a thread, so the transport
        # sends them while the disk works; otherwise a quick save stays here.
        inline = not step.behind_sends and self._save_seconds < INLINE_SAVE_SECONDS

        async def save() -> None:
            if inline:
                self._timed_save(step.hard_state, step.entries)
            else:
                await self._threads.run(self._timed_save, step.hard_state, step.entries)

        async with self._wal_lock:
            await self._until_room("saving log entries", save)

    async def _until_room(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Do `work`; while the disk has no room for it, wait and do it again.

        A full disk must not stop the node: nothing of a refused write was kept
        (StorageFull), and the Ready being handled is not acknowledged, so the
        core sees nothing until the work is done. Meanwhile this member neither
        saves nor applies, which its peers see as a slow member.
        """
        delay = FULL_RETRY_SECONDS
        while True:
            try:
                result = await work()
            except StorageFull as exc:
                if not self.storage_full:
                    log.error("%s: %s; waiting for room", what, exc)
                self.storage_full = True
                await trio.sleep(delay)
                delay = min(2 * delay, FULL_RETRY_MAX_SECONDS)
                continue
            if self.storage_full:
                log.warning("disk has room again: %s goes on", what)
                self.storage_full = False
            return result

    def _timed_save(self, hard_state: HardState | None, entries: tuple[Entry, ...]) -> None:
        started = time.perf_counter()
        self._wal.save(hard_state, list(entries))
        self._save_seconds += (time.perf_counter() - started - self._save_seconds) / 8

    def _send(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            if msg.type is MessageType.SNAPSHOT:
                assert self._nursery is not None
                self._nursery.start_soon(self.snapshots.send, msg)
            else:
                self.transport.send(msg.to, {"t": "raft", "m": msg.to_wire()})

    async def _apply(self, entries: tuple[Entry, ...]) -> None:
        batch = [
            (e.index, e.data if e.kind is EntryKind.NORMAL else None) for e in entries
        ]
        for entry in entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                self._voters_committed(ConfChangeEntry.from_bytes(entry.data).voters)

        async def apply() -> list[Any]:
            if len(batch) <= INLINE_APPLY_ENTRIES:
                done = self.applier.apply_batch(batch)
                await trio.lowlevel.checkpoint()  # still a point where other tasks run
                return done
            return await self._threads.run(self.applier.apply_batch, batch)

        results = await self._until_room("applying committed entries", apply)
        self.on_applied(results)
        self._applied_to(entries[-1].index)

    def _voters_committed(self, voters: tuple[str, ...]) -> None:
        """Take a committed membership change, with one line saying who came and went."""
        before, self.committed_voters = self.committed_voters, voters
        # A member that knew no voters yet (it waits to be added) learns them all at
        # once: that is who the voters are, not who came.
        added = sorted(set(voters) - set(before)) if before else []
        removed = sorted(set(before) - set(voters))
        if added or removed or not before:
            log.info(
                "voters are %s%s%s", ", ".join(voters) or "none",
                f"; added {', '.join(added)}" if added else "",
                f"; removed {', '.join(removed)}" if removed else "",
            )

    async def _install_snapshot(self, meta: SnapshotMeta) -> None:
        await self.snapshots.install(meta)
        self.committed_voters = meta.voters
        self._applied_to(self.applier.applied_index)

    def _applied_to(self, index: int) -> None:
        self.applied = index
        self._refresh_peers()  # a batch may have changed voters or their addresses
        self._applied_changed = _fire(self._applied_changed)

    def _snapshot_interval(self) -> int:
        """Applied entries since the last snapshot that make the next one due:
        `snapshot_every`, or any at all once their bytes pass `snapshot_bytes`."""
        if self.core.applied_log_bytes() >= self.snapshot_bytes:
            return 1
        return self.snapshot_every

    async def _compact_core(self, index: int) -> SnapshotMeta | None:
        """Compact the core's log to `index`, on the loop like every call into it."""
        compacted = trio.Event()
        metas: list[SnapshotMeta] = []

        def compact() -> None:
            try:
                metas.append(self.core.compact(index))
            except InvalidCompaction as exc:
                log.warning("snapshot at %d not taken: %s", index, exc)
            compacted.set()

        self._submit(compact)
        await compacted.wait()
        return metas[0] if metas else None

    def _read_index(self, context: bytes) -> None:
        try:
            self.core.read_index(context)
        except NotLeader:
            pass  # no leader known: the reader asks again

    # -- frames from peers -------------------------------------------------------

    async def _on_frame(self, sender: str, frame: Any) -> None:
        if not isinstance(frame, dict):
            raise MalformedMessage("a frame must be a map")
        kind = frame.get("t")
        if kind == "raft":
            msg = Message.from_wire(frame.get("m"))
            if msg.from_id != sender:
                raise MalformedMessage("message sender does not match the connection")
            size = sum(len(entry.data) for entry in msg.entries)
            while size and self._queued["messages"] >= MAX_QUEUED_MESSAGE_BYTES:
                await self._inbox_taken.wait()
            self._submit_counted("messages", size, lambda: self.core.step(msg))
        elif kind in FORWARDED:
            action = self._forwarder.action_for(sender, frame)
            size = len(frame["d"]) if kind == "propose" else 0  # action_for checked it
            if size and not self._has_room(size):
                self.shed_proposals += 1
                log.debug("proposal from %s dropped: no room (it retries)", sender)
                return
            self._submit_counted("proposals", size, action)
        elif kind == "snap":
            snapshot = await self.snapshots.receive_piece(sender, frame)
            if snapshot is not None:
                self._submit(lambda: self.core.step(snapshot))
        else:
            raise MalformedMessage(f"unknown frame type {kind!r}")

    # -- peers ----------------------------------------------------------------------

    def _refresh_peers(self) -> None:
        known = self.applier.raft_addresses()
        voters = set(self.core.voters)
        for node_id, address in self.bootstrap_peers.items():
            if node_id in voters and node_id not in known:
                known[node_id] = address
        for node_id, address in self.transport.learned.items():
            known.setdefault(node_id, address)  # e.g. our leader, before we applied its address
        known.pop(self.node_id, None)
        self.transport.set_peers(known)


def _fire(event: trio.Event) -> trio.Event:
    """Wake everyone waiting on `event`; the fresh event the next waiters wait on."""
    event.set()
    return trio.Event()


__all__ = ["RaftDriver", "bootstrap_voters"]
