"""The pure Raft state machine: `RaftNode` takes ticks, messages and client
requests and hands back `Ready` batches for the driver to act on.

It follows etcd-io/raft and the Raft dissertation: leader election with
pre-vote and check-quorum (plus the §4.2.3 leader lease: a node that heard
from a live leader within an election timeout ignores vote requests), log
replication with fast conflict back-off, commitment only of current-term
entries (a new leader appends a NOOP), single-server membership changes,
snapshots, ReadIndex and leadership transfer. Nothing here touches a socket,
a disk, a clock or global randomness: time is `tick()`, randomness is the
`random.Random` the caller passes in, and all I/O is described in `Ready`.
The bookkeeping it leans on lives beside it, as in etcd: follower progress in
`progress.py`, majority arithmetic in `quorum.py`, the queue of ReadIndex
reads in `read_only.py`.

Membership changes take effect when appended, not when applied (dissertation
§4.1): every node uses the latest configuration in its log, committed or not,
and falls back to the previous one if that entry is truncated. A leader
accepts a new change only after the previous one is committed and after it
has committed an entry in its own term (the fix for the single-server change
bug, dissertation §4.1 erratum). A leader that removed itself keeps leading
without counting its own vote until the removal commits, then hands off with
TimeoutNow to its most up-to-date follower and steps down.

The driver loop is: `if node.has_ready(): rd = node.ready()`, persist
`rd.snapshot`, `rd.entries` (overwriting any suffix from the first one's
index) and `rd.hard_state`, then send `rd.messages`, apply
`rd.committed_entries`, and call `node.advance(rd)`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consensus.raft.errors import (
    ConfChangeInProgress,
    InvalidCompaction,
    NotLeader,
    ProposalDropped,
    ReadyPending,
    TransferRefused,
)
from consensus.raft.log import RaftLog
from consensus.raft.membership import ConfChange, ConfChangeEntry
from consensus.raft.messages import TRANSFER_CONTEXT, Message, MessageType
from consensus.raft.progress import FollowerProgress, Progress, ProgressState
from consensus.raft.quorum import VoteResult, committed_index, vote_result
from consensus.raft.read_only import PendingReads
from consensus.raft.types import Entry, EntryKind, HardState, SnapshotMeta

MT = MessageType

# The most entry data one append carries (one entry more only when that entry
# alone is larger): well under the transport's frame limit, and small enough
# that a follower catching up gets a steady stream of frames, not one huge one.
MAX_APPEND_BYTES = 8 << 20
# The most entry data a leader holds uncommitted before it refuses proposals
# (etcd-io/raft's MaxUncommittedEntriesSize): a leader that cannot reach its
# followers, or whose disk is slow, stops taking more instead of growing. Eight
# of the largest manifest entries (about 8 MiB each) fit, so a burst of big
# pushes still overlaps its fsyncs and round trips.
MAX_UNCOMMITTED_BYTES = 64 << 20
# The most committed entry data one Ready hands over to apply (always at least
# one entry): a member catching up applies in steps instead of decoding its
# whole backlog in one transaction.
MAX_APPLY_BYTES = 32 << 20


class ProposalsBackedUp(ProposalDropped):
    """The leader's uncommitted entries (and the proposals queued for it)
    already fill `max_uncommitted_bytes`: it takes more once some commit."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to observe but need not persist."""

    leader: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex result: once the local applied index reaches `index`, a
    read started with `context` may be served linearizably."""

    context: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver, in the order it must be done."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: SnapshotMeta | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    soft_state: SoftState | None
    # False when only messages/committed entries changed, so no fsync is needed.
    must_sync: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    role: Role
    term: int
    leader: str | None
    commit: int
    applied: int
    last_index: int
    voters: tuple[str, ...]
    progress: dict[str, FollowerProgress] = field(default_factory=dict)
    log_bytes: int = 0  # entry data held in memory, everything since the snapshot
    uncommitted_bytes: int = 0


class RaftNode:
    """One Raft peer, restored from what its driver persisted."""

    def __init__(
        self,
        node_id: str,
        *,
        voters: Iterable[str],
        hard_state: HardState,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None,
        rng: random.Random,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_append_entries: int = 256,
        max_append_bytes: int = MAX_APPEND_BYTES,
        max_uncommitted_bytes: int = MAX_UNCOMMITTED_BYTES,
        max_apply_bytes: int = MAX_APPLY_BYTES,
        applied: int = 0,
    ) -> None:
        if heartbeat_ticks < 1 or election_ticks <= heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if max_append_entries < 1:
            raise ValueError("max_append_entries must be positive")
        if max_append_bytes < 1 or max_uncommitted_bytes < 1 or max_apply_bytes < 1:
            raise ValueError("max_append_bytes, max_uncommitted_bytes, max_apply_bytes: positive")
        self.id = node_id
        self._rng = rng
        self._election_ticks = election_ticks
        self._heartbeat_ticks = heartbeat_ticks
        self._pre_vote = pre_vote
        self._check_quorum = check_quorum
        self._max_append = max_append_entries
        # Appends are capped in bytes too: a count alone lets a follower that
        # missed many large entries be sent one frame larger than the
        # transport accepts, again and again, and never catch up.
        self._max_append_bytes = max_append_bytes
        self._max_uncommitted_bytes = max_uncommitted_bytes
        self._max_apply_bytes = max_apply_bytes
        self._bootstrap_voters = tuple(sorted(set(voters)))

        self._log = RaftLog(snapshot, entries, hard_state.commit, applied)
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.role = Role.FOLLOWER
        self.leader: str | None = None

        self._voters: tuple[str, ...] = ()
        self._conf_index = 0  # index of the latest CONF_CHANGE entry in the log, 0 if none
        self._rescan_config()

        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._progress: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        self._pending_reads = PendingReads()
        self._reads_awaiting_commit: list[tuple[bytes, str]] = []
        self._transferee: str | None = None
        self._broadcast_due = False
        self._leader_ticks = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = election_ticks
        self._ready_outstanding = False

        self._prev_hard_state = HardState(self.term, self.vote, self._log.committed)
        self._prev_soft_state = SoftState(None, Role.FOLLOWER)
        self._become_follower(self.term, None)

    # -- public API -------------------------------------------------------

    @property
    def voters(self) -> tuple[str, ...]:
        return self._voters

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, msg: Message) -> None:
        """Feed one message received from a peer."""
        if msg.to != self.id:
            return
        if msg.term == 0:
            if msg.type is not MT.READ_INDEX:
                return  # only forwarded requests travel without a term
        elif msg.term > self.term:
            if msg.type in (MT.VOTE, MT.PRE_VOTE):
                forced = msg.context == TRANSFER_CONTEXT
                in_lease = (
                    self._check_quorum
                    and self.leader is not None
                    and self._election_elapsed < self._election_ticks
                )
                if in_lease and not forced:
                    return  # §4.2.3: a live leader exists; do not let this node disrupt it
            if msg.type is MT.PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif msg.type is MT.PRE_VOTE_RESP and not msg.reject:
                pass  # granted pre-votes carry the future term; counted below
            elif msg.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self._become_follower(msg.term, msg.from_id)
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self.term:
            if (self._check_quorum or self._pre_vote) and msg.type in (MT.APPEND, MT.HEARTBEAT):
                # A stale leader that we ignore would never learn our term; with
                # pre-vote or check-quorum our term can outpace it, so tell it.
                self._send(MT.APPEND_RESP, msg.from_id)
            elif msg.type is MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, msg.from_id, reject=True)
            return

        if msg.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    def propose(self, data: bytes) -> int:
        """Append a state-machine command; returns its log index. The command is
        committed once it shows up in Ready.committed_entries at that index
        with this node's current term. Raises ProposalsBackedUp when the
        uncommitted entries have no room for `data`."""
        self._check_can_propose()
        if not self.accepts_proposal(len(data)):
            raise ProposalsBackedUp(
                f"{self._log.uncommitted_bytes()} bytes are not committed yet "
                f"(limit {self._max_uncommitted_bytes})"
            )
        return self._append_new(EntryKind.NORMAL, data)

    def accepts_proposal(self, size: int, queued: int = 0) -> bool:
        """Whether a proposal of `size` bytes fits beside the uncommitted
        entries (a leader's) and the `queued` bytes of proposals still on
        their way to the core. Nothing waiting means room for one entry of
        any size, so a single large command is never refused forever."""
        waiting = queued
        if self.role is Role.LEADER:
            waiting += self._log.uncommitted_bytes()
        return waiting == 0 or waiting + size <= self._max_uncommitted_bytes

    def log_bytes(self) -> int:
        """Entry data the log holds in memory: everything since the last snapshot."""
        return self._log.size_bytes()

    def applied_log_bytes(self) -> int:
        """Entry data of applied entries still in the log: what a snapshot now would free."""
        return self._log.applied_bytes()

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a membership change of one voter; returns its log index."""
        self._check_can_propose()
        if self._log.term(self._log.committed) != self.term:
            raise ConfChangeInProgress("the leader has not committed an entry in its term yet")
        if self._conf_index > self._log.committed:
            raise ConfChangeInProgress(f"conf change at {self._conf_index} is not committed yet")
        voters = change.applied_to(self._voters)
        return self._append_new(EntryKind.CONF_CHANGE, ConfChangeEntry(change, voters).to_bytes())

    def read_index(self, context: bytes) -> None:
        """Start a linearizable read; its ReadState appears in a later Ready.

        `context` must be unique among reads in flight. Followers forward the
        request to the leader; without a known leader this raises NotLeader.
        A read is silently dropped if leadership changes before it is
        confirmed (or the forward is lost), so the caller needs a timeout.
        """
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
        elif self.leader is not None:
            self._msgs.append(Message(MT.READ_INDEX, self.id, self.leader, context=context))
        else:
            raise NotLeader(None)

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to `to` once its log is up to date (TimeoutNow).
        Proposals are refused until the transfer ends or times out after an
        election timeout."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if to == self.id:
            return
        if to not in self._voters:
            raise TransferRefused(f"{to} is not a voter")
        if self._transferee == to:
            return
        self._transferee = to
        self._election_elapsed = 0  # the transfer gets one election timeout
        if self._progress[to].match == self._log.last_index():
            self._send(MT.TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def compact(self, index: int) -> SnapshotMeta:
        """The application took a snapshot at `index`; drop entries up to it.
        Returns the SnapshotMeta (with the voters at `index`) the driver must
        store next to the snapshot bytes."""
        term = self._log.term(index)
        if term is None or index <= self._log.offset or index > self._log.applied:
            raise InvalidCompaction(
                f"cannot compact at {index}: compacted up to {self._log.offset}, "
                f"applied up to {self._log.applied}"
            )
        meta = SnapshotMeta(index, term, self._voters_at(index))
        self._log.compact(meta)
        return meta

    def has_ready(self) -> bool:
        if self._ready_outstanding:
            return False
        self._flush_broadcast()
        log = self._log
        return bool(
            self._msgs
            or self._read_states
            or self._soft_state() != self._prev_soft_state
            or self._hard_state() != self._prev_hard_state
            or log.stable < log.last_index()
            or log.pending_snapshot is not None
            or log.has_next_committed()
        )

    def ready(self) -> Ready:
        if self._ready_outstanding:
            raise ReadyPending("advance() the previous Ready first")
        self._flush_broadcast()
        log = self._log
        hard = self._hard_state()
        soft = self._soft_state()
        entries = tuple(log.unstable_entries())
        committed = tuple(log.next_committed(self._max_apply_bytes))
        rd = Ready(
            hard_state=hard if hard != self._prev_hard_state else None,
            entries=entries,
            snapshot=log.pending_snapshot,
            committed_entries=committed,
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            soft_state=soft if soft != self._prev_soft_state else None,
            must_sync=bool(entries)
            or hard.term != self._prev_hard_state.term
            or hard.vote != self._prev_hard_state.vote
            or log.pending_snapshot is not None,
        )
        self._msgs = []
        self._read_states = []
        self._prev_hard_state = hard
        self._prev_soft_state = soft
        if committed:
            log.applying = committed[-1].index
        self._ready_outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in `rd`."""
        log = self._log
        if rd.snapshot is not None:
            log.snapshot_installed(rd.snapshot)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        self._ready_outstanding = False

    def status(self) -> Status:
        progress: dict[str, FollowerProgress] = {}
        if self.role is Role.LEADER:
            progress = {
                peer: FollowerProgress(pr.match, pr.next, pr.state, self._recently_heard(pr))
                for peer, pr in self._progress.items()
                if peer != self.id
            }
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader,
            commit=self._log.committed,
            applied=self._log.applied,
            last_index=self._log.last_index(),
            voters=self._voters,
            progress=progress,
            log_bytes=self._log.size_bytes(),
            uncommitted_bytes=self._log.uncommitted_bytes(),
        )

    # -- state transitions -------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._election_ticks + self._rng.randrange(self._election_ticks)
        self._transferee = None
        self._votes = {}
        self._progress = {}
        self._pending_reads = PendingReads()
        self._reads_awaiting_commit = []
        self._broadcast_due = False
        self._leader_ticks = 0

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-vote must not disturb anyone.
        self._votes = {}
        self._randomized_timeout = self._election_ticks + self._rng.randrange(self._election_ticks)
        self.leader = None
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        last = self._log.last_index()
        for voter in self._voters:
            self._progress[voter] = Progress(last + 1)  # last_heard 0: one timeout to answer
        if self.id in self._progress:
            self._progress[self.id].match = last
        # Entries of earlier terms commit only through one of our own (§5.4.2).
        self._append_new(EntryKind.NOOP, b"")

    def _promotable(self) -> bool:
        return self.id in self._voters

    def _campaign(self, *, pre_vote: bool, transfer: bool = False) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self._votes[self.id] = True
        if vote_result(self._voters, self._votes) is VoteResult.WON:
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return
        context = TRANSFER_CONTEXT if transfer else b""
        for voter in self._voters:
            if voter != self.id:
                self._msgs.append(
                    Message(
                        vote_type,
                        self.id,
                        voter,
                        term=term,
                        index=self._log.last_index(),
                        log_term=self._log.last_term(),
                        context=context,
                    )
                )

    # -- ticking -----------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._campaign(pre_vote=self._pre_vote)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        for pr in self._progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
        self._leader_ticks += 1
        if self._check_quorum and not self._quorum_active():
            # Not heard from a majority for an election timeout: another leader
            # may exist, and our lease-holding followers may have moved on.
            self._become_follower(self.term, None)
            return
        if self._election_elapsed >= self._election_ticks:
            self._election_elapsed = 0
            self._transferee = None  # a transfer gets one election timeout
        if self._heartbeat_elapsed >= self._heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._pending_reads.last_context())

    def _recently_heard(self, pr: Progress) -> bool:
        return self._leader_ticks - pr.last_heard < self._election_ticks

    def _quorum_active(self) -> bool:
        active = {
            v: True
            for v in self._voters
            if v == self.id or (v in self._progress and self._recently_heard(self._progress[v]))
        }
        return vote_result(self._voters, active) is VoteResult.WON

    # -- message handling ----------------------------------------------------

    def _handle_vote_request(self, msg: Message) -> None:
        resp = MT.VOTE_RESP if msg.type is MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == msg.from_id
            or (self.vote is None and self.leader is None)
            or (msg.type is MT.PRE_VOTE and msg.term > self.term)
        )
        if can_vote and self._log.is_up_to_date(msg.index, msg.log_term):
            # Grants carry the requested term so the candidate counts them.
            self._msgs.append(Message(resp, self.id, msg.from_id, term=msg.term))
            if msg.type is MT.VOTE:
                self._election_elapsed = 0
                self.vote = msg.from_id
        else:
            self._send(resp, msg.from_id, reject=True)

    def _step_leader(self, msg: Message) -> None:
        if msg.type is MT.APPEND_RESP:
            self._handle_append_response(msg)
        elif msg.type is MT.HEARTBEAT_RESP:
            self._handle_heartbeat_response(msg)
        elif msg.type is MT.READ_INDEX:
            self._leader_read(msg.context, msg.from_id)

    def _step_candidate(self, msg: Message) -> None:
        if msg.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            # Someone won this term; follow it.
            self._become_follower(msg.term, msg.from_id)
            self._step_follower(msg)
        elif (msg.type is MT.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            msg.type is MT.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            self._votes.setdefault(msg.from_id, not msg.reject)
            outcome = vote_result(self._voters, self._votes)
            if outcome is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False)
                else:
                    self._become_leader()
                    self._broadcast_append()
            elif outcome is VoteResult.LOST:
                self._become_follower(self.term, None)

    def _step_follower(self, msg: Message) -> None:
        if msg.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self._election_elapsed = 0
            self.leader = msg.from_id
            if msg.type is MT.APPEND:
                self._handle_append(msg)
            elif msg.type is MT.HEARTBEAT:
                self._log.commit_to(min(msg.commit, self._log.last_index()))
                self._send(MT.HEARTBEAT_RESP, msg.from_id, context=msg.context)
            else:
                self._handle_snapshot(msg)
        elif msg.type is MT.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre_vote=False, transfer=True)
        elif msg.type is MT.READ_INDEX_RESP:
            self._read_states.append(ReadState(msg.context, msg.index))

    def _handle_append(self, msg: Message) -> None:
        log = self._log
        if msg.index < log.committed:
            self._send(MT.APPEND_RESP, msg.from_id, index=log.committed)
            return
        last_new = log.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if last_new is not None:
            if msg.entries:
                self._config_touched(msg.entries[0].index, msg.entries)
            self._send(MT.APPEND_RESP, msg.from_id, index=last_new)
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(msg.index, log.last_index()), msg.log_term
        )
        self._send(
            MT.APPEND_RESP,
            msg.from_id,
            index=msg.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )

    def _handle_snapshot(self, msg: Message) -> None:
        snap = msg.snapshot
        log = self._log
        if snap is None:
            return
        if snap.index <= log.committed:
            self._send(MT.APPEND_RESP, msg.from_id, index=log.committed)
            return
        if log.match_term(snap.index, snap.term):
            # We already hold the snapshot's last entry, so everything up to it matches.
            log.commit_to(snap.index)
            self._send(MT.APPEND_RESP, msg.from_id, index=log.last_index())
            return
        log.restore(snap)
        self._rescan_config()
        self._send(MT.APPEND_RESP, msg.from_id, index=log.last_index())

    def _handle_append_response(self, msg: Message) -> None:
        pr = self._progress.get(msg.from_id)
        if pr is None:
            return
        pr.last_heard = self._leader_ticks
        if msg.reject:
            next_probe = msg.reject_hint
            if msg.log_term > 0:
                next_probe, _ = self._log.find_conflict_by_term(msg.reject_hint, msg.log_term)
            if pr.maybe_decr_to(msg.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(msg.from_id)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            if self.role is not Role.LEADER:
                return  # the commit removed us
            self._broadcast_append()
        elif was_paused:
            self._send_append(msg.from_id)
        while self._send_append(msg.from_id, send_if_empty=False):
            pass
        if msg.from_id == self._transferee and pr.match == self._log.last_index():
            self._send(MT.TIMEOUT_NOW, msg.from_id)

    def _handle_heartbeat_response(self, msg: Message) -> None:
        pr = self._progress.get(msg.from_id)
        if pr is None:
            return
        pr.last_heard = self._leader_ticks
        pr.paused = False
        if pr.state is ProgressState.SNAPSHOT and pr.snapshot_ticks >= self._election_ticks:
            pr.become_probe()  # the snapshot was probably lost; probe again
        if pr.match < self._log.last_index():
            self._send_append(msg.from_id)
        if msg.context:
            self._acknowledge_read(msg.context, msg.from_id)

    # -- replication -----------------------------------------------------------

    def _send(self, kind: MessageType, to: str, **fields: object) -> None:
        self._msgs.append(Message(kind, self.id, to, term=self.term, **fields))  # type: ignore[arg-type]

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        """Send the next append (or a snapshot) to `to`; False if nothing went."""
        pr = self._progress[to]
        if pr.is_paused():
            return False
        log = self._log
        prev_index = pr.next - 1
        prev_term = log.term(prev_index)
        if prev_term is None:
            # The entries it needs are compacted: only a snapshot can help.
            if not self._recently_heard(pr) or log.snapshot is None:
                return False
            self._send(MT.SNAPSHOT, to, snapshot=log.snapshot)
            pr.become_snapshot(log.snapshot.index)
            return True
        entries = log.slice(
            pr.next,
            min(log.last_index() + 1, pr.next + self._max_append),
            max_bytes=self._max_append_bytes,
        )
        if not entries and not send_if_empty:
            return False
        self._send(
            MT.APPEND,
            to,
            index=prev_index,
            log_term=prev_term,
            entries=tuple(entries),
            commit=log.committed,
        )
        if pr.state is ProgressState.REPLICATE:
            if entries:
                pr.next = entries[-1].index + 1
        else:
            pr.paused = True
        return True

    def _broadcast_append(self) -> None:
        for peer in self._progress:
            if peer != self.id:
                self._send_append(peer)

    def _flush_broadcast(self) -> None:
        """Proposals only mark a broadcast as due, so many proposals between two
        Ready batches leave as one append per follower."""
        if self._broadcast_due:
            self._broadcast_due = False
            if self.role is Role.LEADER:
                for peer in self._progress:
                    if peer != self.id:
                        self._send_append(peer, send_if_empty=False)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for peer, pr in self._progress.items():
            if peer != self.id:
                self._send(
                    MT.HEARTBEAT,
                    peer,
                    commit=min(pr.match, self._log.committed),
                    context=context,
                )

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.id not in self._voters:
            raise NotLeader(None)  # removed; stepping down once the removal commits
        if self._transferee is not None:
            raise ProposalDropped(f"transferring leadership to {self._transferee}")

    def _append_new(self, kind: EntryKind, data: bytes) -> int:
        index = self._log.last_index() + 1
        entry = Entry(self.term, index, kind, data)
        self._log.append([entry])
        self._config_touched(index, [entry])
        if self.id in self._progress:
            self._progress[self.id].maybe_update(index)
        self._broadcast_due = True
        self._maybe_commit()
        return index

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, if it is an entry
        of our term; returns whether it moved."""
        candidate = committed_index(self._voters, self._match_of)
        log = self._log
        if candidate <= log.committed or log.term(candidate) != self.term:
            return False
        log.commit_to(candidate)
        self._after_commit()
        return True

    def _match_of(self, voter: str) -> int:
        """What `voter` is known to hold; nothing while it has no progress yet."""
        pr = self._progress.get(voter)
        return pr.match if pr is not None else 0

    def _after_commit(self) -> None:
        if self._reads_awaiting_commit and self._log.term(self._log.committed) == self.term:
            waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            for context, requester in waiting:
                self._leader_read(context, requester)
        if self._log.committed >= self._conf_index:
            for peer in [p for p in self._progress if p not in self._voters and p != self.id]:
                del self._progress[peer]
        if self.id not in self._voters and self._log.committed >= self._conf_index:
            # Our removal is committed: let the most up-to-date voter take over now
            # rather than after an election timeout, then stop leading.
            last = self._log.last_index()
            best = max(
                (v for v in self._voters if v in self._progress),
                key=lambda v: self._progress[v].match,
                default=None,
            )
            if best is not None and self._progress[best].match == last:
                self._send(MT.TIMEOUT_NOW, best)
            self._become_follower(self.term, None)

    # -- membership ------------------------------------------------------------

    def _voters_at(self, index: int) -> tuple[str, ...]:
        """The configuration in effect once the log is applied up to `index`."""
        log = self._log
        for i in range(min(index, log.last_index()), log.offset, -1):
            entry = log.entry(i)
            if entry.kind is EntryKind.CONF_CHANGE:
                return ConfChangeEntry.from_bytes(entry.data).voters
        if log.snapshot is not None:
            return log.snapshot.voters
        return self._bootstrap_voters

    def _rescan_config(self) -> None:
        log = self._log
        self._conf_index = 0
        for i in range(log.last_index(), log.offset, -1):
            if log.entry(i).kind is EntryKind.CONF_CHANGE:
                self._conf_index = i
                break
        self._set_voters(self._voters_at(log.last_index()))

    def _config_touched(self, first_index: int, entries: Sequence[Entry]) -> None:
        """Entries from `first_index` were written: a truncated conf entry
        reverts the configuration, a new one takes effect now."""
        if first_index <= self._conf_index:
            self._rescan_config()
            return
        for entry in reversed(entries):
            if entry.kind is EntryKind.CONF_CHANGE:
                self._conf_index = entry.index
                self._set_voters(ConfChangeEntry.from_bytes(entry.data).voters)
                return

    def _set_voters(self, voters: tuple[str, ...]) -> None:
        self._voters = tuple(sorted(voters))
        if self.role is not Role.LEADER:
            return
        last = self._log.last_index()
        for voter in self._voters:
            if voter not in self._progress:
                pr = Progress(last + 1)
                pr.last_heard = self._leader_ticks  # a new voter gets one timeout to answer
                self._progress[voter] = pr
        # A removed peer keeps receiving appends until its removal commits, so
        # it learns it was removed and stops campaigning (see _after_commit).
        if self._transferee is not None and self._transferee not in self._voters:
            self._transferee = None
        self._maybe_commit()

    # -- ReadIndex -------------------------------------------------------------

    def _leader_read(self, context: bytes, requester: str) -> None:
        log = self._log
        if log.term(log.committed) != self.term:
            # Until our NOOP commits we do not know the true commit index (§6.4).
            self._reads_awaiting_commit.append((context, requester))
            return
        if context in self._pending_reads:
            return
        if self._voters == (self.id,):
            self._respond_read(context, log.committed, requester)
            return
        self._pending_reads.add_request(context, log.committed, requester, self.id)
        self._broadcast_heartbeat(context)

    def _acknowledge_read(self, context: bytes, peer: str) -> None:
        acks = self._pending_reads.recv_ack(context, peer)
        if acks is None or vote_result(self._voters, acks) is not VoteResult.WON:
            return
        for read in self._pending_reads.advance(context):
            self._respond_read(read.context, read.index, read.requester)

    def _respond_read(self, context: bytes, index: int, requester: str) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(context, index))
        else:
            self._send(MT.READ_INDEX_RESP, requester, index=index, context=context)

    # -- persisted state -------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self._log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role)
