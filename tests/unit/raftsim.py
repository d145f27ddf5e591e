"""A deterministic simulator that runs RaftNodes on a faulty network.

One seed drives everything: the network drops, delays (and so reorders) and
duplicates messages, partitions nodes, crashes and restarts them, and clients
propose commands, change membership, compact logs, transfer leadership and
issue ReadIndex reads. Each node's simulated driver executes the same plan
of a Ready as the real driver (`consensus/raft/ready.py`): install the
snapshot, send a leader's early appends, persist entries and hard state to
its `Disk`, send the rest, apply committed entries to a state machine that is
persisted together with its applied index, deliver read states. A crash
throws away the RaftNode and everything not yet on the Disk (including a
Ready that was persisted but whose messages were never sent); a restart
rebuilds the node from the Disk alone.

After every delivery round the simulator checks the Raft safety properties
(one leader per term, log matching, leader completeness, state-machine
safety, ReadIndex linearizability); once faults stop it checks liveness (a
leader is elected and a proposal commits within a bounded number of ticks).
Any violation raises `InvariantViolation` naming the seed and the last events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from consensus.raft.core import RaftNode, Ready, Role
from consensus.raft.errors import RaftError
from consensus.raft.membership import ConfChange, ConfChangeEntry, ConfChangeKind
from consensus.raft.messages import Message, MessageType
from consensus.raft.ready import (
    ApplyCommitted,
    DeliverReads,
    InstallSnapshot,
    SaveToLog,
    SendMessages,
    Step,
    plan_ready,
)
from consensus.raft.types import Entry, EntryKind, HardState, SnapshotMeta

ELECTION_TICKS = 8
HEARTBEAT_TICKS = 2
ROUNDS_PER_TICK = 2  # message delays are counted in rounds, so replication outpaces ticks
LIVENESS_TICKS = 30 * ELECTION_TICKS


class InvariantViolation(AssertionError):
    """A safety or liveness property failed for one seed."""

    def __init__(self, seed: int, problem: str, trace: list[str]) -> None:
        self.seed = seed
        self.problem = problem
        self.trace = trace
        recent = "\n  ".join(trace[-40:])
        super().__init__(
            f"seed {seed}: {problem}\n"
            f"replay: FLOTILLA_RAFT_SEED={seed} .venv/bin/python -m pytest "
            f"tests/unit/test_raft_sim.py -k test_replay_one_seed -s\n"
            f"last events:\n  {recent}"
        )


@dataclass
class Disk:
    """What survives a crash: exactly what the driver persisted."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    # The state machine: its applied index and a hash chain over applied entries.
    sm_index: int = 0
    sm_hash: bytes = b""


@dataclass
class SimNode:
    id: str
    bootstrap: tuple[str, ...]
    disk: Disk = field(default_factory=Disk)
    raft: RaftNode | None = None
    removed: bool = False
    down_until: int = 0
    # Snapshot bytes by index, received from the leader or taken locally.
    snapshots: dict[int, bytes] = field(default_factory=dict)


@dataclass
class FaultPlan:
    """How hostile the network and the nodes are for one seed."""

    loss: float
    duplicate: float
    max_delay: int
    crash: float
    partition: float
    mid_ready_crash: float
    pre_vote: bool = True
    check_quorum: bool = True


@dataclass
class SimStats:
    ticks: int = 0
    messages: int = 0
    committed: int = 0
    reads: int = 0
    elections: int = 0
    snapshots_installed: int = 0
    conf_changes: int = 0
    transfers: int = 0


def _chain(prev: bytes, entry: Entry) -> bytes:
    return hashlib.blake2b(
        prev + entry.term.to_bytes(8, "big") + bytes([entry.kind]) + entry.data, digest_size=16
    ).digest()


class Simulation:
    LIVENESS_MARKER = b"liveness"

    def __init__(self, seed: int, size: int, fault_ticks: int = 200) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.fault_ticks = fault_ticks
        rng = self.rng
        self.plan = FaultPlan(
            loss=rng.choice([0.0, 0.02, 0.1, 0.25]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            max_delay=rng.choice([1, 2, 4, 8]),
            crash=rng.choice([0.0, 0.01, 0.03]),
            partition=rng.choice([0.0, 0.02, 0.05]),
            mid_ready_crash=rng.choice([0.0, 0.002, 0.01]),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
        )
        ids = tuple(f"n{i}" for i in range(1, size + 1))
        self.nodes: dict[str, SimNode] = {}
        self.next_node_number = size + 1
        for node_id in ids:
            self.nodes[node_id] = SimNode(node_id, ids)
            self._start(self.nodes[node_id])
        self.now = 0  # in rounds
        self.network: list[tuple[int, int, Message, bytes]] = []
        self.sequence = 0
        self.groups: dict[str, int] = {}  # partition group per node; absent = group 0
        self.trace: deque[str] = deque(maxlen=200)
        self.stats = SimStats()
        self.faults_on = True

        # What the invariants remember.
        self.leader_of_term: dict[int, str] = {}
        self.entry_seen: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}
        # index -> an upper bound on the term of the leader that committed it
        self.committed_term: dict[int, int] = {}
        self.committed_entry_term: dict[int, int] = {}
        self.chain: dict[int, bytes] = {0: b""}
        self.max_applied = 0
        self.read_floor: dict[tuple[str, bytes], int] = {}
        self.proposal_counter = 0
        self.liveness_retry_at = 0
        self.liveness_done = False

    # -- running ------------------------------------------------------------

    def run(self) -> SimStats:
        for _ in range(self.fault_ticks):
            self._tick_round(faults=True)
        self._stop_faults()
        for _ in range(LIVENESS_TICKS):
            self._tick_round(faults=False)
            if self.liveness_done:
                return self.stats
        self.fail(f"no proposal committed within {LIVENESS_TICKS} ticks after faults stopped")
        raise AssertionError("unreachable")

    def _tick_round(self, faults: bool) -> None:
        self.stats.ticks += 1
        if faults:
            self._inject_faults()
        self._client_actions(faults)
        for node in self._alive():
            assert node.raft is not None
            node.raft.tick()
        for _ in range(ROUNDS_PER_TICK):
            self._deliver_due()
            self._process_readies()
            self.now += 1

    def _alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def fail(self, problem: str) -> None:
        raise InvariantViolation(self.seed, problem, list(self.trace))

    def _log(self, text: str) -> None:
        self.trace.append(f"r{self.now} {text}")

    # -- nodes --------------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        disk = node.disk
        # As the driver does: a commit-only Ready is not saved, so the commit index on
        # disk may lag what was applied; anything applied was committed and is logged.
        hs = disk.hard_state
        if disk.entries:
            last = disk.entries[-1].index
        else:
            last = disk.snapshot.index if disk.snapshot else 0
        known = min(disk.sm_index, last)
        if hs.commit < known:
            hs = dataclasses.replace(hs, commit=known)
        node.raft = RaftNode(
            node.id,
            voters=node.bootstrap,
            hard_state=hs,
            entries=list(disk.entries),
            snapshot=disk.snapshot,
            rng=random.Random(self.rng.getrandbits(64)),
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=HEARTBEAT_TICKS,
            pre_vote=self.plan.pre_vote,
            check_quorum=self.plan.check_quorum,
            max_append_entries=8,
            applied=disk.sm_index,
        )
        node.snapshots = {disk.snapshot.index: disk.snapshot_data} if disk.snapshot else {}

    def _crash(self, node: SimNode, why: str) -> None:
        node.raft = None
        node.snapshots = {}
        node.down_until = self.stats.ticks + self.rng.randint(1, 4 * ELECTION_TICKS)
        self._log(f"{node.id} crashes ({why})")

    def _members(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if not n.removed]

    # -- faults and clients -----------------------------------------------

    def _inject_faults(self) -> None:
        rng, plan = self.rng, self.plan
        for node in self._members():
            if node.raft is None and self.stats.ticks >= node.down_until:
                self._start(node)
                self._log(f"{node.id} restarts from disk term={node.disk.hard_state.term}")
            elif node.raft is not None and rng.random() < plan.crash:
                self._crash(node, "fault")
        if rng.random() < plan.partition:
            if self.groups:
                self.groups = {}
                self._log("partition healed")
            else:
                members = [n.id for n in self._members()]
                if rng.random() < 0.5:
                    lonely = rng.choice(members)
                    self.groups = {lonely: 1}
                else:
                    self.groups = {m: rng.randint(0, 1) for m in members}
                self._log(f"partition {self.groups}")

    def _stop_faults(self) -> None:
        self.faults_on = False
        self.groups = {}
        self.plan = FaultPlan(
            0.0, 0.0, 1, 0.0, 0.0, 0.0, self.plan.pre_vote, self.plan.check_quorum
        )
        for node in self._members():
            if node.raft is None:
                self._start(node)
        self._log("faults stop; everything restarted and healed")

    def _leaders(self) -> list[SimNode]:
        return [n for n in self._alive() if n.raft is not None and n.raft.role is Role.LEADER]

    def _client_actions(self, faults: bool) -> None:
        rng = self.rng
        alive = self._alive()
        if not alive:
            return
        if not faults:
            # Propose again now and then: a leader may lose an uncommitted proposal.
            if self.stats.ticks >= self.liveness_retry_at:
                for leader in self._leaders():
                    assert leader.raft is not None
                    try:
                        leader.raft.propose(self.LIVENESS_MARKER)
                    except RaftError:
                        continue
                    self.liveness_retry_at = self.stats.ticks + 2 * ELECTION_TICKS
                    self._log(f"{leader.id} takes the liveness proposal")
            return
        if rng.random() < 0.6:
            # Clients mostly find the leader; sometimes they ask a follower.
            leaders = self._leaders()
            node = rng.choice(leaders if leaders and rng.random() < 0.7 else alive)
            self.proposal_counter += 1
            data = f"cmd-{self.proposal_counter}".encode()
            self._try(node, "propose", lambda r: r.propose(data))
        if rng.random() < 0.15:
            node = rng.choice(alive)
            self.proposal_counter += 1
            context = f"read-{self.proposal_counter}".encode()
            self.read_floor[(node.id, context)] = self.max_applied
            self._try(node, "read_index", lambda r: r.read_index(context))
        if rng.random() < 0.03:
            self._change_membership()
        if rng.random() < 0.02:
            for leader in self._leaders():
                assert leader.raft is not None
                others = [v for v in leader.raft.voters if v != leader.id]
                if others:
                    target = rng.choice(others)
                    self.stats.transfers += 1
                    self._try(
                        leader,
                        f"transfer to {target}",
                        lambda r, to=target: r.transfer_leadership(to),
                    )
        if rng.random() < 0.1:
            self._compact(rng.choice(alive))

    def _try(self, node: SimNode, what: str, action) -> None:  # noqa: ANN001 - tiny local callback
        assert node.raft is not None
        try:
            action(node.raft)
        except RaftError as exc:
            self._log(f"{node.id} {what} refused: {type(exc).__name__}")
        else:
            self._log(f"{node.id} {what}")

    def _change_membership(self) -> None:
        leaders = self._leaders()
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        raft = leader.raft
        assert raft is not None
        voters = raft.voters
        if len(voters) < 5 and (len(voters) <= 3 or self.rng.random() < 0.5):
            new_id = f"n{self.next_node_number}"
            change = ConfChange.add(new_id)
        else:
            change = ConfChange.remove(self.rng.choice(voters))
        try:
            raft.propose_conf_change(change)
        except RaftError as exc:
            self._log(f"{leader.id} conf change {change} refused: {type(exc).__name__}")
            return
        self.stats.conf_changes += 1
        self._log(f"{leader.id} proposes {change.kind.value} {change.node_id}")
        if change.kind is ConfChangeKind.ADD_VOTER:
            self.next_node_number += 1
            # A joining node starts empty and learns the configuration from the log.
            node = SimNode(change.node_id, ())
            self.nodes[node.id] = node
            self._start(node)

    def _compact(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        applied = node.disk.sm_index
        offset = node.disk.snapshot.index if node.disk.snapshot else 0
        if applied - offset < 10:
            return
        meta = raft.compact(applied)
        node.disk.snapshot = meta
        node.disk.snapshot_data = node.disk.sm_hash
        node.disk.entries = [e for e in node.disk.entries if e.index > meta.index]
        node.snapshots[meta.index] = node.disk.sm_hash
        self._log(f"{node.id} compacts to {meta.index}")

    # -- network --------------------------------------------------------------

    def _connected(self, a: str, b: str) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def _send(self, sender: SimNode, msg: Message) -> None:
        self.stats.messages += 1
        attachment = b""
        if msg.type is MessageType.SNAPSHOT:
            assert msg.snapshot is not None
            if msg.snapshot.index not in sender.snapshots:
                self.fail(f"{sender.id} sent snapshot {msg.snapshot} it does not hold")
            attachment = sender.snapshots[msg.snapshot.index]
        rng, plan = self.rng, self.plan
        if not self._connected(sender.id, msg.to) or rng.random() < plan.loss:
            return
        copies = 2 if rng.random() < plan.duplicate else 1
        for _ in range(copies):
            self.sequence += 1
            due = self.now + rng.randint(0, plan.max_delay)
            heapq.heappush(self.network, (due, self.sequence, msg, attachment))

    def _deliver_due(self) -> None:
        while self.network and self.network[0][0] <= self.now:
            _, _, msg, attachment = heapq.heappop(self.network)
            node = self.nodes.get(msg.to)
            if node is None or node.raft is None or not self._connected(msg.from_id, msg.to):
                continue
            if msg.type is MessageType.SNAPSHOT:
                assert msg.snapshot is not None
                node.snapshots[msg.snapshot.index] = attachment  # saved before stepping
            node.raft.step(msg)
            if self.faults_on and self.rng.random() < self.plan.mid_ready_crash:
                # Whatever that step changed was never persisted: it must not matter.
                self._crash(node, f"after stepping {msg.type.name}, before persisting")

    # -- the driver -------------------------------------------------------------

    def _process_readies(self) -> None:
        nodes = self._alive()
        self.rng.shuffle(nodes)
        for node in nodes:
            raft = node.raft
            if raft is not None and raft.has_ready():
                self._handle_ready(node, raft, raft.ready())

    def _handle_ready(self, node: SimNode, raft: RaftNode, rd: Ready) -> None:
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            # Checked on the core as the Ready finds it, before any crash can intervene.
            self._on_new_leader(node, raft)
        for step in plan_ready(rd, node.disk.hard_state.term):
            if not self._execute(node, raft, step):
                return  # crashed half-way: the rest of the Ready never happens
        raft.advance(rd)

    def _execute(self, node: SimNode, raft: RaftNode, step: Step) -> bool:
        """Do one step of a Ready's plan on the simulated disk and network.

        Returns False when the node crashed instead: the faults strike exactly
        where a real driver can be half-way through a Ready.
        """
        disk = node.disk
        if isinstance(step, InstallSnapshot):
            snap = step.meta
            data = node.snapshots.get(snap.index)
            if data is None:
                self.fail(f"{node.id} asked to install snapshot {snap} it never received")
            if self.chain.get(snap.index, data) != data:
                self.fail(f"{node.id} installs snapshot {snap.index} with a diverging state")
            disk.snapshot, disk.snapshot_data = snap, data
            disk.entries = []
            disk.sm_index, disk.sm_hash = snap.index, data
            self.stats.snapshots_installed += 1
            self._log(f"{node.id} installs snapshot {snap.index}/{snap.term}")
        elif isinstance(step, SendMessages):
            crash_now = self.faults_on and self.rng.random() < self.plan.mid_ready_crash
            if crash_now and not step.before_save:
                self._crash(node, "after persisting, before sending")
                return False
            for msg in step.messages:
                self._send(node, msg)
            if crash_now:
                self._crash(node, "after sending appends early, before persisting")
                return False
        elif isinstance(step, SaveToLog):
            if step.entries:
                self._check_new_entries(node, raft, step.entries)
                first = step.entries[0].index
                while disk.entries and disk.entries[-1].index >= first:
                    disk.entries.pop()
                disk.entries.extend(step.entries)
            if step.hard_state is not None:
                disk.hard_state = step.hard_state
        elif isinstance(step, ApplyCommitted):
            for entry in step.entries:
                self._apply(node, entry)
        elif isinstance(step, DeliverReads):
            for read in step.read_states:
                self._check_read(node, read.context, read.index)
        # ObserveRole: simulated clients look for the leader themselves.
        return True

    # -- invariants -------------------------------------------------------------

    def _check_new_entries(self, node: SimNode, raft: RaftNode, entries: tuple[Entry, ...]) -> None:
        """Log matching: an (index, term) pair names one entry with one
        predecessor term, so two logs sharing it share their whole prefix."""
        prev_term = raft._log.term(entries[0].index - 1)
        for entry in entries:
            key = (entry.index, entry.term)
            seen = (int(entry.kind), entry.data, prev_term)
            known = self.entry_seen.setdefault(key, seen)
            if known[:2] != seen[:2] or (
                known[2] is not None and prev_term is not None and known[2] != prev_term
            ):
                self.fail(
                    f"log matching: {node.id} holds {entry} with prev term {prev_term}, "
                    f"another node holds {known}"
                )
            prev_term = entry.term

    def _on_new_leader(self, node: SimNode, raft: RaftNode) -> None:
        self.stats.elections += 1
        term = raft.term
        holder = self.leader_of_term.setdefault(term, node.id)
        if holder != node.id:
            self.fail(f"two leaders in term {term}: {holder} and {node.id}")
        self._log(f"{node.id} leads term {term} last={raft._log.last_index()}")
        for index in self.committed_term:
            self._check_leader_holds(node, raft, index)

    def _check_leader_holds(self, node: SimNode, raft: RaftNode, index: int) -> None:
        """Leader completeness: a leader of a term after the one that committed
        an entry holds that entry."""
        if raft.term <= self.committed_term[index] or index <= raft._log.offset:
            return
        term = self.committed_entry_term[index]
        if raft._log.term(index) != term:
            self.fail(
                f"leader completeness: {node.id} leads term {raft.term} without "
                f"entry {index}/{term} committed by term {self.committed_term[index]}"
            )

    def _apply(self, node: SimNode, entry: Entry) -> None:
        disk = node.disk
        if entry.index <= disk.sm_index:
            return
        if entry.index != disk.sm_index + 1:
            self.fail(f"{node.id} applies {entry.index} after {disk.sm_index}")
        new_hash = _chain(disk.sm_hash, entry)
        known = self.chain.setdefault(entry.index, new_hash)
        if known != new_hash:
            self.fail(f"state machine safety: {node.id} applies a different entry at {entry.index}")
        disk.sm_index, disk.sm_hash = entry.index, new_hash
        # The entry was committed by a leader of some term T, and the applying
        # node's term is at least T (it learned the commit index from that
        # leader or a later one), so the smallest such term bounds T from above
        # and leaders of later terms must hold the entry.
        assert node.raft is not None
        bound = self.committed_term.get(entry.index)
        if bound is None:
            self.stats.committed += 1
        if bound is None or node.raft.term < bound:
            self.committed_term[entry.index] = node.raft.term
            self.committed_entry_term[entry.index] = entry.term
            for leader in self._leaders():
                assert leader.raft is not None
                self._check_leader_holds(leader, leader.raft, entry.index)
        self.max_applied = max(self.max_applied, entry.index)
        if entry.kind is EntryKind.CONF_CHANGE:
            change = ConfChangeEntry.from_bytes(entry.data).change
            if change.kind is ConfChangeKind.REMOVE_VOTER:
                removed = self.nodes.get(change.node_id)
                if removed is not None and not removed.removed:
                    removed.removed = True
                    removed.raft = None
                    self._log(f"{removed.id} removed at {entry.index}, shut down")
        if entry.data == self.LIVENESS_MARKER and entry.kind is EntryKind.NORMAL:
            self.liveness_done = True

    def _check_read(self, node: SimNode, context: bytes, index: int) -> None:
        """ReadIndex linearizability: a read must see every entry that was
        applied anywhere (so possibly acknowledged) before it started."""
        self.stats.reads += 1
        floor = self.read_floor.pop((node.id, context), None)
        if floor is None:
            return  # a duplicate answer to a read already served
        if index < floor:
            self.fail(
                f"read {context!r} at {node.id} got index {index} < {floor} "
                "already applied before it started"
            )


def run_seed(seed: int, fault_ticks: int = 200) -> SimStats:
    """Run one seeded cluster: even seeds get three nodes, odd seeds five."""
    size = 3 if seed % 2 == 0 else 5
    return Simulation(seed, size, fault_ticks).run()
