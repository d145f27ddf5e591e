"""The one interface `node` has to the replicated metadata, and the Raft member behind it.

`propose` changes state (answered only once the command is committed and
applied on this node, or refused the same way on every node), `lookup` reads
the local copy and confirms a miss with a read barrier, `queries` reads the
local copy as it is, and membership and status describe the group. Every
cluster size, one node included, is a Raft group: `open_engine` builds the
`RaftEngine` that implements this interface over a `RaftDriver`, to which it
lends the state machine as the driver's applier. A request waits for its own
command id to be applied here, and a follower's driver forwards the command
to the leader; when nothing comes back in time it is submitted again, and
the state machine applies an id once, so a retry is harmless. A command the
driver has no room for (its queue and the leader's uncommitted entries are
full, or snapshots fall behind the writes) is not queued: the request waits
for room, and if none comes within `propose_timeout` it is refused with
`Overloaded`, which tells the client to come back shortly.

`node` imports from `consensus` only through this module: the commands, the
record types the queries return and the errors are re-exported here, and so
is the transport's handshake and frame seal, which the chunk data plane
(`node/cluster/data_plane.py`) authenticates its connections with.
"""

from __future__ import annotations

import shutil
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from consensus.commands import (
    ROLES,
    AddSigningKey,
    ApplyRetention,
    CollectGarbage,
    Command,
    CommandInvalid,
    DeleteAccount,
    DeleteGrant,
    DeleteImmutableTags,
    DeleteManifest,
    DeleteRetentionPolicy,
    DeleteTag,
    DrainMember,
    MountBlob,
    PutAccount,
    PutBlob,
    PutGrant,
    PutImmutableTags,
    PutManifest,
    PutRetentionPolicy,
    RegisterMember,
    RemoveQuota,
    SetPublic,
    SetQuota,
    UnlinkBlob,
    UnregisterMember,
    decode,
    is_valid,
)
from consensus.garbage import Garbage
from consensus.quotas import Quota
from consensus.quotas import over as quota_refusal
from consensus.raft.core import MAX_APPEND_BYTES, MAX_UNCOMMITTED_BYTES, ProposalsBackedUp
from consensus.raft.driver import SNAPSHOT_BYTES, RaftDriver
from consensus.raft.errors import StorageFull
from consensus.raft.membership import ConfChange
from consensus.raft.timings import Timings
from consensus.raft.transport import (
    QUEUE_BYTES,
    TAG_BYTES,
    FrameForged,
    FrameInvalid,
    FrameSeal,
    Greeting,
    Handshake,
    HandshakeFailed,
    PeerTransport,
    Transport,
    answer_handshake,
    describe_failure,
    dial_handshake,
)
from consensus.retention import Deletions, RetentionPolicy
from consensus.state import Refusal, Result, StateMachine
from consensus.store import (
    GcRun,
    ImmutableTags,
    ManifestRecord,
    Member,
    Queries,
    Recipe,
    Referrer,
    connect,
    export_snapshot,
    import_snapshot,
    unpack_chunk_ids,
)
from consensus.tag_patterns import MAX_TAG_PATTERNS, TagPatternInvalid, check_tag_pattern

__all__ = [
    "MAX_TAG_PATTERNS",
    "ROLES",
    "AddSigningKey",
    "CollectGarbage",
    "ApplyRetention",
    "DeleteImmutableTags",
    "DeleteRetentionPolicy",
    "Deletions",
    "ImmutableTags",
    "PutImmutableTags",
    "PutRetentionPolicy",
    "RetentionPolicy",
    "TagPatternInvalid",
    "check_tag_pattern",
    "Command",
    "DeleteAccount",
    "DeleteGrant",
    "DeleteManifest",
    "DeleteTag",
    "DrainMember",
    "Engine",
    "FrameForged",
    "FrameInvalid",
    "FrameSeal",
    "Garbage",
    "GcRun",
    "Greeting",
    "Handshake",
    "HandshakeFailed",
    "ManifestRecord",
    "Member",
    "MembershipRefused",
    "MountBlob",
    "NoQuorum",
    "Overloaded",
    "PutAccount",
    "PutBlob",
    "PutGrant",
    "PutManifest",
    "Queries",
    "Quota",
    "RaftSettings",
    "Recipe",
    "Referrer",
    "Refusal",
    "Refused",
    "RegisterMember",
    "RaftObservations",
    "RemoveQuota",
    "SetPublic",
    "SetQuota",
    "StatePaths",
    "TAG_BYTES",
    "Timings",
    "UnlinkBlob",
    "UnregisterMember",
    "answer_handshake",
    "describe_failure",
    "dial_handshake",
    "open_engine",
    "quota_refusal",
    "unpack_chunk_ids",
]

T = TypeVar("T")

# How long one submission of a request waits for its effect before it is made again.
RESUBMIT_SECONDS = 1.0


class NoQuorum(Exception):
    """The group could not commit (or confirm leadership) in time: retry later."""


class Overloaded(NoQuorum):
    """Raft has no room for the command right now (proposals queued, entries
    uncommitted or not yet snapshotted pass their byte limits): retry shortly."""

    retry_after_seconds = 1


class MembershipRefused(Exception):
    """A membership change that cannot be made (e.g. removing the last voter)."""


class Refused(Exception):
    """The state machine refused the command; every node refused it the same way."""

    def __init__(self, refusal: Refusal, detail: str | None = None) -> None:
        super().__init__(f"{refusal.name}: {detail}" if detail else refusal.name)
        self.refusal = refusal
        self.detail = detail


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
    snapshot_bytes: int = SNAPSHOT_BYTES  # applied entry data in the log that makes a snapshot due
    max_append_bytes: int = MAX_APPEND_BYTES  # entry data in one append to a follower
    # Entry data a leader holds uncommitted, with the proposals queued for it,
    # before it refuses more (Overloaded).
    max_uncommitted_bytes: int = MAX_UNCOMMITTED_BYTES
    propose_timeout: float = 5.0
    linearizable_reads: bool = False  # every `lookup` takes a barrier first
    disk_threads: int = 2  # worker threads Raft's disk work may hold at once
    queue_bytes: int = QUEUE_BYTES  # frames waiting for one peer, beyond which they are dropped
    # TLS around every transport connection, both ways; None: plain TCP.
    server_ssl: ssl.SSLContext | None = field(default=None, repr=False)
    client_ssl: ssl.SSLContext | None = field(default=None, repr=False)


@dataclass
class RaftObservations:
    """What this member counted and timed since it started, for the node's metrics:
    proposals by outcome (committed, refused, no_quorum, overloaded, abandoned) and their
    latency, the write-ahead log's fsyncs, and the snapshots it took."""

    proposals: Counter[str]
    propose_seconds: Timings
    wal_fsync_seconds: Timings
    snapshots_taken: int


class Engine(Protocol):
    queries: Queries
    http_advertise: str | None  # set by the node once its HTTP port is bound
    raft_advertise: str | None  # known once the Raft transport listens

    async def propose(self, command: Command) -> None:
        """Commit and apply `command`; Refused or NoQuorum when that cannot be."""
        ...

    async def barrier(self) -> None: ...

    async def lookup(self, query: Callable[[Queries], T | None]) -> T | None:
        """`query` on the local state, with a miss confirmed after a read barrier."""
        ...

    def blob_chunk_lists(self) -> Iterator[tuple[str, ...]]:
        """Every recorded blob's chunk ids (blocking: call from a worker thread)."""
        ...

    def garbage(self, now: int, grace_seconds: int) -> tuple[Garbage, set[str]]:
        """A dry run of CollectGarbage and the chunks it frees (blocking: a worker thread)."""
        ...

    def members(self) -> list[RegisterMember]: ...

    def draining(self) -> set[str]:
        """The members being drained (a local read)."""
        ...

    def leader(self) -> str | None: ...

    def voters(self) -> tuple[str, ...]: ...

    def status(self) -> dict[str, Any]: ...

    def observations(self) -> RaftObservations:
        """Counts and timings since start, cheap to read (no disk, no lock)."""
        ...

    async def add_member(self, node_id: str, raft: str, http: str, zone: str = ...) -> None: ...

    async def remove_member(self, node_id: str) -> None: ...

    async def drain_member(self, node_id: str, draining: bool = True) -> None:
        """Mark a member draining (or no longer); MembershipRefused if it is unknown."""
        ...

    async def transfer_leader(self, to: str) -> None: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine's background work, started in the node's root nursery."""
        ...

    def close(self) -> None: ...


def open_engine(paths: StatePaths, settings: RaftSettings) -> Engine:
    """Open (or create) this node's Raft member over its state files."""
    return RaftEngine(paths, settings)


class StateApplier:
    """The state machine and its database, as the Raft driver applies to them."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.machine = StateMachine(connect(db))  # first: it creates the database
        self.queries = Queries(connect(db, readonly=True))

    @property
    def applied_index(self) -> int:
        return self.machine.applied_index

    def apply_batch(self, entries: list[tuple[int, bytes | None]]) -> list[Any]:
        """(command id, Result) for each entry, as the state machine answers;
        StorageFull (nothing applied) when the database has no room to commit."""
        try:
            return self.machine.apply_batch(entries)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(exc):
                raise StorageFull(f"the state database has no room: {exc}") from exc
            raise

    def export_snapshot(self, target: Path) -> int:
        return export_snapshot(self.db, target)

    def import_snapshot(self, source: Path) -> None:
        import_snapshot(self.machine.conn, source)

    def raft_addresses(self) -> dict[str, str]:
        return {m.node_id: m.raft for m in self.queries.members()}

    def close(self) -> None:
        self.machine.conn.close()
        self.queries.conn.close()


@dataclass
class _Proposal:
    """A request waiting for its command: `wake` is set when the result is in
    (`done`) or the leader changed, one event per request instead of a nursery."""

    wake: trio.Event = field(default_factory=trio.Event)
    done: bool = False
    result: Any = None


class RaftEngine:
    """A member of a Raft group, holding the replicated metadata of this node.

    `transport` replaces the TCP transport `settings` describe (tests run
    whole groups in memory).
    """

    def __init__(
        self, paths: StatePaths, settings: RaftSettings, transport: PeerTransport | None = None
    ) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        shutil.rmtree(paths.incoming, ignore_errors=True)
        paths.incoming.mkdir(parents=True)
        self._db_path = paths.db
        self._applier = StateApplier(paths.db)
        self.queries = self._applier.queries
        if transport is None:
            transport = Transport(
                settings.node_id, settings.secret, settings.raft_listen,
                advertise_host=settings.advertise_host, queue_bytes=settings.queue_bytes,
                server_ssl=settings.server_ssl, client_ssl=settings.client_ssl,
            )
        self._proposals: dict[str, _Proposal] = {}
        self._proposal_outcomes: Counter[str] = Counter()
        self._propose_seconds = Timings()
        self._driver = RaftDriver(
            settings.node_id,
            applier=self._applier,
            transport=transport,
            wal_dir=paths.wal,
            snapshot_dir=paths.snapshots,
            incoming_dir=paths.incoming,
            limiter=trio.CapacityLimiter(settings.disk_threads),
            peers=settings.peers,
            join=settings.join,
            tick_seconds=settings.tick_seconds,
            election_ticks=settings.election_ticks,
            heartbeat_ticks=settings.heartbeat_ticks,
            snapshot_every=settings.snapshot_every,
            snapshot_bytes=settings.snapshot_bytes,
            max_append_bytes=settings.max_append_bytes,
            max_uncommitted_bytes=settings.max_uncommitted_bytes,
            on_applied=self._settle_proposals,
            on_leader_change=self._resubmit_proposals,
            accept_proposal=is_valid,
        )
        self.http_advertise: str | None = None  # set by the node once its HTTP port is bound
        self.raft_advertise: str | None = None

    # -- the interface node/ uses -------------------------------------------

    async def propose(self, command: Command) -> None:
        """Commit `command` and wait until it is applied here.

        Raises Refused when the state machine refused it, NoQuorum on timeout,
        Overloaded when Raft had no room for it in that time.
        """
        started = time.monotonic()
        outcome = "abandoned"  # the request was cancelled (its client went away)
        try:
            result = await self._commit(command)
            outcome = "committed" if result.refusal is None else "refused"
        except Overloaded:
            outcome = "overloaded"
            raise
        except NoQuorum:
            outcome = "no_quorum"
            raise
        finally:
            self._proposal_outcomes[outcome] += 1
            self._propose_seconds.observe(time.monotonic() - started)
        if result.refusal is not None:
            raise Refused(result.refusal, result.detail)

    async def _commit(self, command: Command) -> Result:
        data = command.encode()
        try:
            decode(data)  # a leader would drop it, and the proposal would only time out
        except CommandInvalid as exc:
            return Result(Refusal.COMMAND_INVALID, str(exc))
        waiter = self._proposals.setdefault(command.id, _Proposal())
        submitted = False
        try:
            with trio.move_on_after(self.settings.propose_timeout):
                while not self._submit(data):
                    await trio.sleep(self.settings.tick_seconds)  # a commit or snapshot makes room
                submitted = True
                while True:
                    with trio.move_on_after(RESUBMIT_SECONDS):
                        await waiter.wake.wait()
                    if waiter.done:
                        return waiter.result
                    if self._driver.leader is None:
                        await trio.sleep(self.settings.tick_seconds)
                    if waiter.wake.is_set():
                        waiter.wake = trio.Event()
                    self._submit(data)  # if Raft is full, the first copy may still commit
            if not submitted:
                raise Overloaded("Raft had no room for the command in time")
            raise NoQuorum("the proposal was not committed in time")
        finally:
            self._proposals.pop(command.id, None)

    def _submit(self, data: bytes) -> bool:
        """Hand `data` to the driver; False when it has no room for it now."""
        try:
            self._driver.propose(data)
        except ProposalsBackedUp:
            return False
        return True

    async def barrier(self) -> None:
        """Wait until this node has applied everything committed before the call."""
        with trio.move_on_after(self.settings.propose_timeout):
            while True:
                index = await self._driver.read_index()
                if index is not None:
                    await self._driver.wait_applied(index)
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

    def garbage(self, now: int, grace_seconds: int) -> tuple[Garbage, set[str]]:
        """What CollectGarbage(now, grace_seconds) would remove, over a private connection.

        Blocking and possibly long: call it from a worker thread.
        """
        private = Queries(connect(self._db_path, readonly=True))
        try:
            return private.garbage(now, grace_seconds)
        finally:
            private.conn.close()

    def members(self) -> list[RegisterMember]:
        return [
            RegisterMember(node_id=m.node_id, raft=m.raft, http=m.http, zone=m.zone)
            for m in self.queries.members()
        ]

    def draining(self) -> set[str]:
        return self.queries.draining()

    def leader(self) -> str | None:
        return self._driver.leader

    def voters(self) -> tuple[str, ...]:
        return self._driver.voters

    def status(self) -> dict[str, Any]:
        st = self._driver.status()
        addresses = {m.node_id: m for m in self.queries.members()}
        members = []
        for node_id in sorted(set(st.voters) | set(addresses)):
            entry: dict[str, Any] = {"node_id": node_id, "voter": node_id in st.voters}
            if node_id in addresses:
                m = addresses[node_id]
                entry.update(raft=m.raft, http=m.http, zone=m.zone, draining=m.draining)
            if node_id in st.progress:
                pr = st.progress[node_id]
                entry.update(match=pr.match, next=pr.next, active=pr.recent_active)
            members.append(entry)
        transport = self._driver.transport
        return {
            "node_id": self.node_id,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "commit_index": st.commit,
            "applied_index": self._driver.applied,
            "last_index": st.last_index,
            "snapshot_index": self._driver.snapshot_index,
            "voters": list(st.voters),
            "members": members,
            "transport": {"rejected": transport.rejected, "dropped": transport.dropped},
            "log_bytes": st.log_bytes,
            "uncommitted_bytes": st.uncommitted_bytes,
            "shed_proposals": self._driver.shed_proposals,
            "storage_full": self._driver.storage_full,
        }

    def observations(self) -> RaftObservations:
        return RaftObservations(
            proposals=self._proposal_outcomes,
            propose_seconds=self._propose_seconds,
            wal_fsync_seconds=self._driver.wal_fsync_seconds,
            snapshots_taken=self._driver.snapshots.taken,
        )

    async def add_member(self, node_id: str, raft: str, http: str, zone: str = "default") -> None:
        """Record the new node's addresses, then make it a voter."""
        try:
            await self.propose(RegisterMember(node_id=node_id, raft=raft, http=http, zone=zone))
        except Refused as exc:
            raise MembershipRefused(str(exc)) from None
        await self._change_voters(
            ConfChange.add(node_id), lambda: node_id in self._driver.committed_voters
        )

    async def remove_member(self, node_id: str) -> None:
        """Make `node_id` leave the voters, then forget its addresses.

        Refused for this node itself: the group takes forwarded requests only
        from voters, so once the removal committed this node could not have its
        registration forgotten, nor even learn the removal committed. Another
        member must make it (a drained node asks its leader, node/cluster/drain.py).
        """
        if node_id == self.node_id:
            raise MembershipRefused(
                f"{node_id} cannot remove itself (once removed, the group takes no request "
                "from it): ask another member"
            )
        await self._change_voters(
            ConfChange.remove(node_id), lambda: node_id not in self._driver.committed_voters
        )
        await self.propose(UnregisterMember(node_id=node_id))

    async def drain_member(self, node_id: str, draining: bool = True) -> None:
        """Commit the member's draining flag. Whether the rest can hold its chunks
        (enough members left for R copies) is the caller's to judge: R is not Raft's."""
        try:
            await self.propose(DrainMember(node_id=node_id, draining=draining))
        except Refused as exc:
            if exc.refusal is Refusal.MEMBER_MISSING:
                raise MembershipRefused(f"{node_id} is not a member") from None
            raise

    async def transfer_leader(self, to: str) -> None:
        if to not in self._driver.voters:
            raise MembershipRefused(f"{to} is not a voter")
        with trio.move_on_after(self.settings.propose_timeout):
            while self._driver.leader != to:
                self._driver.transfer_leadership(to)
                with trio.move_on_after(RESUBMIT_SECONDS):
                    await self._driver.wait_leader_change()
            return
        raise NoQuorum(f"leadership did not move to {to} in time")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._driver.run)
            port = self._driver.transport.port
            self.raft_advertise = f"{self.settings.advertise_host}:{port}"
            nursery.start_soon(self._register_self)
            task_status.started()

    def close(self) -> None:
        self._driver.close()
        self._applier.close()

    # -- what the driver reports ------------------------------------------------

    def _settle_proposals(self, results: list[tuple[str | None, Result]]) -> None:
        for command_id, result in results:
            if command_id is None:
                continue
            proposal = self._proposals.get(command_id)
            if proposal is not None:
                proposal.result = result
                proposal.done = True
                proposal.wake.set()

    def _resubmit_proposals(self) -> None:
        for proposal in self._proposals.values():
            proposal.wake.set()  # submit again, to the new leader

    # -- membership ---------------------------------------------------------------

    async def _change_voters(self, change: ConfChange, done: Callable[[], bool]) -> None:
        if change.kind.value == "remove" and self._driver.voters == (change.node_id,):
            raise MembershipRefused("cannot remove the last voter")
        with trio.move_on_after(self.settings.propose_timeout * 2):
            while not done():
                self._driver.change_voters(change)
                with trio.move_on_after(0.5):
                    await self._driver.wait_applied(self._driver.applied + 1)
            return
        raise NoQuorum(f"membership change {change.kind.value} {change.node_id} timed out")

    async def _register_self(self) -> None:
        """Make sure the replicated member list has this node's current addresses."""
        while self.http_advertise is None or self.raft_advertise is None:
            await trio.sleep(0.05)
        me = RegisterMember(
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
            if current or self.node_id not in self._driver.voters:
                await trio.sleep(1.0)
                continue
            try:
                await self.propose(me)
            except NoQuorum:
                await trio.sleep(1.0)
