"""The Raft driver: runs the pure core on trio and is the engine `node` talks to.

One task owns the `RaftNode`. Everything that would touch it — ticks,
messages from peers, proposals, read requests, membership changes — is put
in an inbox and handed to the core by that task between two `Ready` batches,
so the core never sees concurrent calls. Each batch is handled in the order
Raft needs: install a received snapshot, append entries and hard state to
the write-ahead log (one fsync for the whole batch: group commit), then send
messages, then apply committed entries to the state machine in one SQLite
transaction, then answer the waiting requests.

A client request waits for its own command id to be applied on this node, so
a write is acknowledged only once it is committed and visible here. A
follower forwards the command to the leader and, when nothing comes back in
time, submits it again; the state machine applies an id once, so a retry is
harmless. Snapshots are taken every `snapshot_every` applied entries (an
SQLite backup), compact the log, and are streamed to followers that fell
behind over a dedicated connection of the transport.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from consensus import commands as c
from consensus.raft.core import RaftNode, Role
from consensus.raft.errors import (
    ConfChangeInProgress,
    InvalidCompaction,
    InvalidConfChange,
    MalformedMessage,
    NotLeader,
    ProposalDropped,
    TransferRefused,
)
from consensus.raft.membership import ConfChange, ConfChangeEntry
from consensus.raft.messages import Message, MessageType
from consensus.raft.snapshot_files import load_latest_snapshot, save_snapshot
from consensus.raft.transport import Transport
from consensus.raft.types import EntryKind, SnapshotMeta
from consensus.raft.wal import WriteAheadLog
from consensus.state import Refusal, Result, StateMachine
from consensus.store import (
    Queries,
    connect,
    export_snapshot,
    import_snapshot,
)

log = logging.getLogger(__name__)

SNAPSHOT_PIECE = 1 << 20
# Messages a leader may send before its own WAL save returns (see _handle_ready).
_EARLY = frozenset({MessageType.APPEND, MessageType.HEARTBEAT})
# On a disk whose saves take less than this, a save blocks the loop instead of
# going to a thread: the hop to the thread and back costs more than the fsync.
INLINE_SAVE_SECONDS = 0.002
# A committed batch this small is applied on the loop: no fsync (the state is
# rebuilt from the log after a crash), so it is quicker than the thread hop.
INLINE_APPLY_ENTRIES = 64


class NoQuorum(Exception):
    """The group could not commit (or confirm leadership) in time: retry later."""


class MembershipRefused(Exception):
    """A membership change that cannot be made (e.g. removing the last voter)."""


class Refused(Exception):
    """The state machine refused the command; every node refused it the same way."""

    def __init__(self, refusal: Refusal, detail: str | None = None) -> None:
        super().__init__(f"{refusal.name}: {detail}" if detail else refusal.name)
        self.refusal = refusal
        self.detail = detail


T = TypeVar("T")


@dataclass(frozen=True)
class StatePaths:
    """Where the replicated state lives on disk; the node's data layout decides."""

    db: Path  # the state machine's SQLite database
    wal: Path  # the write-ahead log's segments
    snapshots: Path  # durable snapshot files
    incoming: Path  # snapshots being received or exported; emptied at start


@dataclass(frozen=True)
class RaftSettings:
    node_id: str
    raft_listen: str  # where this node's transport listens (port 0: any free port)
    advertise_host: str  # the host peers dial and clients reach
    secret: bytes
    peers: dict[str, str] = field(default_factory=dict)  # bootstrap: id -> raft address
    join: bool = False  # start with no configuration and wait to be added
    zone: str = "default"
    tick_seconds: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_every: int = 10_000
    propose_timeout: float = 5.0
    linearizable_reads: bool = False  # every `lookup` takes a barrier first


@dataclass
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    result: Any = None


@dataclass
class _Proposal:
    """A request waiting for its command: `wake` is set when the result is in
    (`done`) or the leader changed, one event per request instead of a nursery."""

    wake: trio.Event = field(default_factory=trio.Event)
    done: bool = False
    result: Any = None


class RaftEngine:
    """A member of a Raft group, holding the replicated metadata of this node."""

    def __init__(self, paths: StatePaths, settings: RaftSettings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self._wal_dir = paths.wal
        self._snap_dir = paths.snapshots
        self._incoming_dir = paths.incoming
        shutil.rmtree(self._incoming_dir, ignore_errors=True)
        self._incoming_dir.mkdir(parents=True)
        db = self._db_path = paths.db
        self._machine = StateMachine(connect(db))
        self.queries = Queries(connect(db, readonly=True))

        self._wal, recovered = WriteAheadLog.open(self._wal_dir)
        latest = load_latest_snapshot(self._snap_dir)
        if latest is not None and (
            recovered.snapshot is None or latest[0].index > recovered.snapshot.index
        ):
            # A crash came between saving a snapshot and compacting the log.
            self._wal.compact(latest[0])
            self._wal.close()
            self._wal, recovered = WriteAheadLog.open(self._wal_dir)
        if recovered.snapshot is not None and (
            self._machine.applied_index < recovered.snapshot.index
        ):
            assert latest is not None
            import_snapshot(self._machine.conn, latest[1])
        self._snapshot_index = recovered.snapshot.index if recovered.snapshot else 0

        if settings.join or (settings.peers and settings.node_id not in settings.peers):
            # Joining: `--join`, or peers that do not list this node. It starts with
            # no configuration and waits to be added (it learns the group from the
            # leader), instead of forming a group of its own.
            bootstrap: tuple[str, ...] = ()
        else:
            bootstrap = tuple(sorted({*settings.peers, settings.node_id}))
        self._applied = self._machine.applied_index
        # The commit index on disk may lag (a commit-only Ready is not saved), but
        # whatever was applied was committed, and it is in the log: start from there.
        hard_state = recovered.hard_state
        known_committed = min(self._applied, self._wal.last_index)
        if hard_state.commit < known_committed:
            hard_state = replace(hard_state, commit=known_committed)
        # Voters as of the last applied membership change: a change counts once committed.
        self._committed_voters: tuple[str, ...] = ()
        self._core = RaftNode(
            settings.node_id,
            voters=bootstrap,
            hard_state=hard_state,
            entries=recovered.entries,
            snapshot=recovered.snapshot,
            rng=random.Random(),
            election_ticks=settings.election_ticks,
            heartbeat_ticks=settings.heartbeat_ticks,
            applied=self._applied,
        )
        self._committed_voters = self._core.voters
        self.transport = Transport(
            settings.node_id, settings.secret, settings.raft_listen, self._on_frame,
            advertise_host=settings.advertise_host,
        )
        self.transport.on_learned = self._refresh_peers
        self._inbox: list[Callable[[], None]] = []
        self._wakeup = trio.Event()
        self._applied_changed = trio.Event()
        self._leader_changed = trio.Event()
        self._proposals: dict[str, _Proposal] = {}
        self._reads: dict[bytes, _Waiter] = {}
        self._incoming: dict[str, tuple[Path, Any]] = {}
        self._nursery: trio.Nursery | None = None
        self._wal_lock = trio.Lock()
        self._snapshotting = False
        self._snapshot_files = trio.Lock()  # one snapshot file written at a time
        self._save_seconds = 0.0  # moving average of the time a WAL save takes
        self.http_advertise: str | None = None  # set by the node once its HTTP port is bound
        self.raft_advertise: str | None = None
        self._refresh_peers()

    # -- the interface node/ uses -------------------------------------------

    async def propose(self, command: c.Command) -> None:
        """Commit `command` and wait until it is applied here.

        Raises Refused when the state machine refused it, NoQuorum on timeout.
        """
        result = await self._commit(command)
        if result.refusal is not None:
            raise Refused(result.refusal, result.detail)

    async def _commit(self, command: c.Command) -> Result:
        data = command.encode()
        waiter = self._proposals.setdefault(command.id, _Proposal())
        try:
            with trio.move_on_after(self.settings.propose_timeout):
                while True:
                    if waiter.wake.is_set():
                        waiter.wake = trio.Event()
                    self._submit(lambda: self._propose_or_forward(data))
                    with trio.move_on_after(1.0):
                        await waiter.wake.wait()
                    if waiter.done:
                        return waiter.result
                    if self._core.leader is None:
                        await trio.sleep(self.settings.tick_seconds)
            raise NoQuorum("the proposal was not committed in time")
        finally:
            self._proposals.pop(command.id, None)

    async def barrier(self) -> None:
        """Wait until this node has applied everything committed before the call."""
        with trio.move_on_after(self.settings.propose_timeout):
            while True:
                context = os.urandom(12)
                waiter = self._reads[context] = _Waiter()
                try:
                    self._submit(lambda ctx=context: self._read_index(ctx))
                    with trio.move_on_after(1.0):
                        await self._first_of(waiter.event, self._leader_changed)
                finally:
                    self._reads.pop(context, None)
                if waiter.event.is_set():
                    await self.wait_applied(waiter.result)
                    return
                await trio.sleep(self.settings.tick_seconds)
        raise NoQuorum("leadership could not be confirmed in time")

    async def lookup(self, query: Callable[[Queries], T | None]) -> T | None:
        """`query` on the local state; a miss (None) is confirmed after a barrier.

        Whatever was committed anywhere before the call is found: a node that
        has not applied it yet catches up before answering "unknown". With
        `linearizable_reads` a hit is vouched for by a barrier too.
        """
        if self.settings.linearizable_reads:
            await self.barrier()
        found = query(self.queries)
        if found is None and not self.settings.linearizable_reads:
            await self.barrier()
            found = query(self.queries)
        return found

    def blob_chunk_lists(self) -> Iterator[tuple[str, ...]]:
        """The chunk ids of every recorded blob, read over a private connection.

        Blocking and possibly long: call it from a worker thread.
        """
        private = Queries(connect(self._db_path, readonly=True))
        try:
            yield from private.blob_chunk_lists()
        finally:
            private.conn.close()

    async def wait_applied(self, index: int) -> None:
        while self._applied < index:
            await self._applied_changed.wait()

    def members(self) -> list[c.RegisterMember]:
        return [
            c.RegisterMember(node_id=m.node_id, raft=m.raft, http=m.http, zone=m.zone)
            for m in self.queries.members()
        ]

    def leader(self) -> str | None:
        return self._core.leader

    def voters(self) -> tuple[str, ...]:
        return self._core.voters

    def status(self) -> dict[str, Any]:
        st = self._core.status()
        addresses = {m.node_id: m for m in self.queries.members()}
        members = []
        for node_id in sorted(set(st.voters) | set(addresses)):
            entry: dict[str, Any] = {"node_id": node_id, "voter": node_id in st.voters}
            if node_id in addresses:
                m = addresses[node_id]
                entry.update(raft=m.raft, http=m.http, zone=m.zone)
            if node_id in st.progress:
                pr = st.progress[node_id]
                entry.update(match=pr.match, next=pr.next, active=pr.recent_active)
            members.append(entry)
        return {
            "node_id": self.node_id,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "commit_index": st.commit,
            "applied_index": self._applied,
            "last_index": st.last_index,
            "snapshot_index": self._snapshot_index,
            "voters": list(st.voters),
            "members": members,
            "transport": {"rejected": self.transport.rejected, "dropped": self.transport.dropped},
        }

    async def add_member(self, node_id: str, raft: str, http: str, zone: str = "default") -> None:
        """Record the new node's addresses, then make it a voter."""
        try:
            await self.propose(c.RegisterMember(node_id=node_id, raft=raft, http=http, zone=zone))
        except Refused as exc:
            raise MembershipRefused(str(exc)) from None
        await self._change_voters(
            ConfChange.add(node_id), lambda: node_id in self._committed_voters
        )

    async def remove_member(self, node_id: str) -> None:
        await self._change_voters(
            ConfChange.remove(node_id), lambda: node_id not in self._committed_voters
        )
        await self.propose(c.UnregisterMember(node_id=node_id))

    async def transfer_leader(self, to: str) -> None:
        if to not in self._core.voters:
            raise MembershipRefused(f"{to} is not a voter")
        with trio.move_on_after(self.settings.propose_timeout):
            while self._core.leader != to:
                self._submit(lambda: self._transfer_or_forward(to))
                with trio.move_on_after(1.0):
                    await self._leader_changed.wait()
            return
        raise NoQuorum(f"leadership did not move to {to} in time")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run)
            self.raft_advertise = f"{self.settings.advertise_host}:{self.transport.port}"
            if self._core.voters == (self.node_id,):
                # Alone in the group: nobody else can lead, so do not sit out an
                # election timeout before taking writes.
                for _ in range(2 * self.settings.election_ticks):
                    self._submit(self._core.tick)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._loop)
            nursery.start_soon(self._register_self)
            task_status.started()

    def close(self) -> None:
        self._wal.close()
        self._machine.conn.close()
        self.queries.conn.close()

    # -- the loop that owns the core ------------------------------------------

    def _submit(self, action: Callable[[], None]) -> None:
        self._inbox.append(action)
        self._wakeup.set()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.settings.tick_seconds)
            self._submit(self._core.tick)

    async def _loop(self) -> None:
        core = self._core
        while True:
            if not self._inbox and not core.has_ready():
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            inbox, self._inbox = self._inbox, []
            for action in inbox:
                action()
            if core.has_ready():
                rd = core.ready()
                await self._handle_ready(rd)
                core.advance(rd)
                await self._maybe_snapshot()

    async def _handle_ready(self, rd: Any) -> None:
        if rd.snapshot is not None:
            await self._install_snapshot(rd.snapshot)
        messages = rd.messages
        # A Ready that only moves the commit index is not saved: Raft needs no commit
        # index on disk (a restarted node learns it again from the leader, and the
        # state machine skips what it applied already), and saving it would put one
        # more fsync on the path of every write; the next save carries it along.
        if rd.must_sync:
            # A leader's appends need not wait for its own fsync (Raft thesis §10.2.1):
            # they acknowledge nothing, and the acks they bring back are stepped into
            # the core only after this save returns, so an entry still counts as
            # committed only once it is durable here too. Only appends and heartbeats
            # of a term already on disk go early; every other message waits.
            durable_term = self._wal.hard_state.term
            early = [m for m in messages if m.type in _EARLY and m.term == durable_term]
            if early:
                self._send(early)
                messages = tuple(m for m in messages if m not in early)
            # With appends in flight the save goes to a thread, so the transport
            # sends them while the disk works; otherwise a quick save stays here.
            inline = not early and self._save_seconds < INLINE_SAVE_SECONDS
            async with self._wal_lock:
                if inline:
                    self._save(rd.hard_state, rd.entries)
                else:
                    await trio.to_thread.run_sync(self._save, rd.hard_state, rd.entries)
        self._send(messages)
        if rd.committed_entries:
            await self._apply(rd.committed_entries)
        for read in rd.read_states:
            waiter = self._reads.get(read.context)
            if waiter is not None:
                waiter.result = read.index
                waiter.event.set()
        if rd.soft_state is not None:
            self._leader_changed.set()
            self._leader_changed = trio.Event()
            for proposal in self._proposals.values():
                proposal.wake.set()  # submit again, to the new leader
            if rd.soft_state.role is Role.LEADER:
                log.info("%s is leader (term %d)", self.node_id, self._core.term)

    def _save(self, hard_state: Any, entries: tuple[Any, ...]) -> None:
        started = time.perf_counter()
        self._wal.save(hard_state, list(entries))
        self._save_seconds += (time.perf_counter() - started - self._save_seconds) / 8

    def _send(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            if msg.type is MessageType.SNAPSHOT:
                assert self._nursery is not None
                self._nursery.start_soon(self._send_snapshot, msg)
            else:
                self.transport.send(msg.to, {"t": "raft", "m": msg.to_wire()})

    async def _apply(self, entries: tuple[Any, ...]) -> None:
        batch = [
            (e.index, e.data if e.kind is EntryKind.NORMAL else None) for e in entries
        ]
        for entry in entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                self._committed_voters = ConfChangeEntry.from_bytes(entry.data).voters
        if len(batch) <= INLINE_APPLY_ENTRIES:
            results = self._machine.apply_batch(batch)
            await trio.lowlevel.checkpoint()  # still a point where other tasks run
        else:
            results = await trio.to_thread.run_sync(self._machine.apply_batch, batch)
        for command_id, result in results:
            if command_id is None:
                continue
            proposal = self._proposals.get(command_id)
            if proposal is not None:
                proposal.result = result
                proposal.done = True
                proposal.wake.set()
        self._applied = entries[-1].index
        self._refresh_peers()  # a batch may have changed voters or their addresses
        self._applied_changed.set()
        self._applied_changed = trio.Event()

    # -- actions run by the loop ------------------------------------------------

    def _propose_or_forward(self, data: bytes) -> None:
        try:
            self._core.propose(data)
        except NotLeader as exc:
            if exc.leader_id is not None and exc.leader_id != self.node_id:
                self.transport.send(exc.leader_id, {"t": "propose", "d": data})
        except ProposalDropped:
            pass

    def _read_index(self, context: bytes) -> None:
        try:
            self._core.read_index(context)
        except NotLeader:
            pass

    def _transfer_or_forward(self, to: str) -> None:
        try:
            self._core.transfer_leadership(to)
        except NotLeader as exc:
            if exc.leader_id is not None and exc.leader_id != self.node_id:
                self.transport.send(exc.leader_id, {"t": "transfer", "to": to})
        except TransferRefused as exc:
            log.warning("leadership transfer to %s refused: %s", to, exc)

    def _conf_change_or_forward(self, change: ConfChange) -> None:
        try:
            self._core.propose_conf_change(change)
        except NotLeader as exc:
            if exc.leader_id is not None and exc.leader_id != self.node_id:
                self.transport.send(
                    exc.leader_id,
                    {"t": "conf", "op": change.kind.value, "node": change.node_id},
                )
        except (ConfChangeInProgress, InvalidConfChange, ProposalDropped) as exc:
            log.debug("membership change %s deferred: %s", change, exc)

    async def _change_voters(self, change: ConfChange, done: Callable[[], bool]) -> None:
        if change.kind.value == "remove" and self._core.voters == (change.node_id,):
            raise MembershipRefused("cannot remove the last voter")
        with trio.move_on_after(self.settings.propose_timeout * 2):
            while not done():
                self._submit(lambda: self._conf_change_or_forward(change))
                with trio.move_on_after(0.5):
                    await self._applied_changed.wait()
            return
        raise NoQuorum(f"membership change {change.kind.value} {change.node_id} timed out")

    async def _register_self(self) -> None:
        """Make sure the replicated member list has this node's current addresses."""
        while self.http_advertise is None or self.raft_advertise is None:
            await trio.sleep(0.05)
        me = c.RegisterMember(
            node_id=self.node_id,
            raft=self.raft_advertise,
            http=self.http_advertise,
            zone=self.settings.zone,
        )
        while True:
            known = {m.node_id: m for m in self.queries.members()}.get(self.node_id)
            current = known is not None and (known.raft, known.http, known.zone) == (
                me.raft, me.http, me.zone
            )
            if current or self.node_id not in self._core.voters:
                await trio.sleep(1.0)
                continue
            try:
                await self.propose(me)
            except NoQuorum:
                await trio.sleep(1.0)

    # -- frames from peers -------------------------------------------------------

    async def _on_frame(self, sender: str, frame: Any) -> None:
        if not isinstance(frame, dict):
            raise MalformedMessage("a frame must be a map")
        kind = frame.get("t")
        if kind == "raft":
            msg = Message.from_wire(frame.get("m"))
            if msg.from_id != sender:
                raise MalformedMessage("message sender does not match the connection")
            self._submit(lambda: self._core.step(msg))
        elif kind == "propose":
            data = bytes(frame["d"])
            self._submit(lambda: self._propose_or_forward(data))
        elif kind == "conf":
            change = ConfChange.add(frame["node"]) if frame["op"] == "add" else (
                ConfChange.remove(frame["node"])
            )
            self._submit(lambda: self._conf_change_or_forward(change))
        elif kind == "transfer":
            to = str(frame["to"])
            self._submit(lambda: self._transfer_or_forward(to))
        elif kind == "snap":
            await self._receive_snapshot_piece(sender, frame)
        else:
            raise MalformedMessage(f"unknown frame type {kind!r}")

    # -- snapshots ------------------------------------------------------------------

    async def _maybe_snapshot(self) -> None:
        """Start a snapshot in the background once enough entries were applied since the last."""
        if self._snapshotting or self._nursery is None:
            return
        if self._applied - self._snapshot_index < self.settings.snapshot_every:
            return
        self._snapshotting = True
        self._nursery.start_soon(self._take_snapshot)

    async def _take_snapshot(self) -> None:
        """Copy the state, let the core drop the log it covers, make both durable.

        The copy runs beside the loop (a database of any size must not hold up
        heartbeats); the core is asked to compact from the loop, like every
        other call into it. Until the snapshot file is durable, a follower that
        needs it is simply asked again later.
        """
        copy = self._incoming_dir / f"export-{os.urandom(6).hex()}"
        try:
            index = await trio.to_thread.run_sync(export_snapshot, self._db_path, copy)
            compacted = trio.Event()
            metas: list[SnapshotMeta] = []

            def compact() -> None:
                try:
                    metas.append(self._core.compact(index))
                except InvalidCompaction as exc:
                    log.warning("snapshot at %d not taken: %s", index, exc)
                compacted.set()

            self._submit(compact)
            await compacted.wait()
            if not metas:
                return
            meta = metas[0]

            def persist() -> None:
                with open(copy, "rb") as source:
                    save_snapshot(self._snap_dir, meta, lambda f: shutil.copyfileobj(source, f))

            # Writing the snapshot file leaves the log alone; only the short
            # compaction of the log itself waits its turn with the loop's saves.
            async with self._snapshot_files:
                await trio.to_thread.run_sync(persist)
            async with self._wal_lock:
                await trio.to_thread.run_sync(self._wal.compact, meta)
            self._snapshot_index = max(self._snapshot_index, index)
            log.info("snapshot at index %d; log compacted", index)
        except OSError as exc:
            log.error("snapshot at %d failed, will try again: %r", self._applied, exc)
        finally:
            copy.unlink(missing_ok=True)
            self._snapshotting = False

    async def _send_snapshot(self, msg: Message) -> None:
        latest = await trio.to_thread.run_sync(
            lambda: load_latest_snapshot(self._snap_dir, verify=False)
        )
        if latest is None or msg.snapshot is None or latest[0].index < msg.snapshot.index:
            return  # the core asks again later
        meta, path = latest
        wire = Message(
            msg.type, msg.from_id, msg.to, term=msg.term, snapshot=meta
        ).to_wire()
        transfer = os.urandom(8).hex()
        try:
            async with self.transport.stream_to(msg.to) as send:
                with open(path, "rb") as f:
                    while True:
                        piece = await trio.to_thread.run_sync(f.read, SNAPSHOT_PIECE)
                        await send({"t": "snap", "x": transfer, "d": piece, "done": not piece,
                                    "m": wire if not piece else None})
                        if not piece:
                            break
            log.info("sent snapshot at %d to %s", meta.index, msg.to)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            log.warning("snapshot to %s failed: %r", msg.to, exc)

    async def _receive_snapshot_piece(self, sender: str, frame: dict[str, Any]) -> None:
        transfer = f"{sender}-{frame['x']}"
        if transfer not in self._incoming:
            fd, name = tempfile.mkstemp(dir=self._incoming_dir, prefix="recv-")
            self._incoming[transfer] = (Path(name), os.fdopen(fd, "wb"))
        path, handle = self._incoming[transfer]
        try:
            if not frame["done"]:
                await trio.to_thread.run_sync(handle.write, bytes(frame["d"]))
                return
            handle.close()
            msg = Message.from_wire(frame["m"])
            if msg.snapshot is None or msg.from_id != sender:
                raise MalformedMessage("snapshot frame without metadata")
            meta = msg.snapshot

            def persist() -> None:
                with open(path, "rb") as source:
                    save_snapshot(self._snap_dir, meta, lambda f: shutil.copyfileobj(source, f))

            async with self._snapshot_files:
                await trio.to_thread.run_sync(persist)
            self._submit(lambda: self._core.step(msg))
        except BaseException:
            handle.close()
            self._incoming.pop(transfer, None)
            path.unlink(missing_ok=True)
            raise
        self._incoming.pop(transfer, None)
        path.unlink(missing_ok=True)

    async def _install_snapshot(self, meta: SnapshotMeta) -> None:
        latest = await trio.to_thread.run_sync(load_latest_snapshot, self._snap_dir)
        if latest is None or latest[0].index != meta.index:
            raise RuntimeError(f"snapshot {meta.index} to install is not on disk")

        def install() -> None:
            import_snapshot(self._machine.conn, latest[1])
            self._wal.compact(meta)

        async with self._wal_lock:
            await trio.to_thread.run_sync(install)
        self._snapshot_index = meta.index
        self._applied = self._machine.applied_index
        self._committed_voters = meta.voters
        self._refresh_peers()
        self._applied_changed.set()
        self._applied_changed = trio.Event()
        log.info("installed snapshot at index %d", meta.index)

    # -- peers ----------------------------------------------------------------------

    def _refresh_peers(self) -> None:
        known = {m.node_id: m.raft for m in self.queries.members()}
        voters = set(self._core.voters)
        for node_id, address in self.settings.peers.items():
            if node_id in voters and node_id not in known:
                known[node_id] = address
        for node_id, address in self.transport.learned.items():
            known.setdefault(node_id, address)  # e.g. our leader, before we applied its address
        known.pop(self.node_id, None)
        self.transport.set_peers(known)

    @staticmethod
    async def _first_of(*events: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for event in events:
                async def wait(e: trio.Event = event) -> None:
                    await e.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait)


__all__ = [
    "MembershipRefused",
    "NoQuorum",
    "RaftEngine",
    "RaftSettings",
    "Refused",
    "StatePaths",
]
