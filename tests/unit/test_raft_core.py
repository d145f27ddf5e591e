"""Focused behaviour tests of the pure Raft core, each on a tiny in-memory
cluster whose network the test controls message by message."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import msgpack
import pytest

from consensus.raft.core import RaftNode, ReadState, Ready, Role
from consensus.raft.errors import (
    ConfChangeInProgress,
    InconsistentStorage,
    InvalidCompaction,
    InvalidConfChange,
    MalformedMessage,
    NotLeader,
    ProposalDropped,
    ReadyPending,
    TransferRefused,
)
from consensus.raft.log import RaftLog
from consensus.raft.membership import ConfChange, ConfChangeEntry
from consensus.raft.messages import Message, MessageType
from consensus.raft.types import Entry, EntryKind, HardState, SnapshotMeta

MT = MessageType
ELECTION = 10


@dataclass
class Storage:
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)


class Net:
    """Nodes plus a synchronous network with switchable links."""

    def __init__(self, ids: list[str], seed: int = 1, **options: object) -> None:
        self.ids = list(ids)
        self.options = options
        self.seed = seed
        self.nodes: dict[str, RaftNode] = {}
        self.storage: dict[str, Storage] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.drop_types: set[MessageType] = set()
        self.sent: list[Message] = []
        for node_id in ids:
            self.add(node_id, voters=ids)

    def add(self, node_id: str, voters: list[str] | tuple[str, ...]) -> RaftNode:
        self.storage[node_id] = Storage()
        node = RaftNode(
            node_id,
            voters=voters,
            hard_state=HardState(),
            entries=[],
            snapshot=None,
            rng=random.Random(f"{self.seed}-{node_id}"),
            election_ticks=ELECTION,
            **self.options,  # type: ignore[arg-type]
        )
        self.nodes[node_id] = node
        return node

    def isolate(self, node_id: str) -> None:
        for other in self.nodes:
            if other != node_id:
                self.blocked |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.blocked.clear()
        self.drop_types.clear()

    def handle_ready(self, node_id: str) -> list[Message]:
        node, store = self.nodes[node_id], self.storage[node_id]
        rd = node.ready()
        if rd.snapshot is not None:
            store.snapshot = rd.snapshot
            store.entries = []
        if rd.entries:
            first = rd.entries[0].index
            store.entries = [e for e in store.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            store.hard_state = rd.hard_state
        store.applied.extend(rd.committed_entries)
        store.read_states.extend(rd.read_states)
        node.advance(rd)
        return list(rd.messages)

    def pump(self, rounds: int = 200) -> None:
        """Persist, send and deliver until the cluster is quiet."""
        for _ in range(rounds):
            outbox: list[Message] = []
            for node_id, node in self.nodes.items():
                if node.has_ready():
                    outbox.extend(self.handle_ready(node_id))
            if not outbox:
                return
            for msg in outbox:
                self.sent.append(msg)
                if (msg.from_id, msg.to) in self.blocked or msg.type in self.drop_types:
                    continue
                if msg.to in self.nodes:
                    self.nodes[msg.to].step(msg)
        raise AssertionError("cluster never went quiet")

    def tick(self, node_ids: list[str] | None = None, times: int = 1) -> None:
        for _ in range(times):
            for node_id in node_ids if node_ids is not None else list(self.nodes):
                self.nodes[node_id].tick()
            self.pump()

    def elect(self, node_id: str) -> RaftNode:
        """Let only `node_id`'s clock run until it wins an election."""
        node = self.nodes[node_id]
        for _ in range(4 * ELECTION):
            if node.role is Role.LEADER:
                self.pump()
                return node
            self.tick([node_id])
        raise AssertionError(f"{node_id} did not win an election")

    def leader(self) -> RaftNode:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        assert len(leaders) == 1, [n.id for n in leaders]
        return leaders[0]

    def applied_data(self, node_id: str) -> list[bytes]:
        return [e.data for e in self.storage[node_id].applied if e.kind is EntryKind.NORMAL]


def three() -> Net:
    return Net(["n1", "n2", "n3"])


# -- election -----------------------------------------------------------------


def test_single_node_cluster_elects_itself_and_commits_alone() -> None:
    net = Net(["n1"])
    leader = net.elect("n1")
    index = leader.propose(b"x")
    net.pump()
    assert leader.status().commit == index
    assert net.applied_data("n1") == [b"x"]


def test_leader_elected_and_proposal_applied_on_every_node() -> None:
    net = three()
    leader = net.elect("n1")
    assert leader.term == 1
    leader.propose(b"hello")
    net.pump()
    for node_id in net.nodes:
        assert net.applied_data(node_id) == [b"hello"]
        assert net.nodes[node_id].leader == "n1"


def test_partitioned_leader_steps_down_after_election_timeout() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n1")
    net.tick(["n1"], times=ELECTION - 1)
    assert leader.role is Role.LEADER
    net.tick(["n1"], times=ELECTION)
    assert leader.role is Role.FOLLOWER
    assert leader.leader is None


def test_leader_with_quorum_keeps_leading_across_many_timeouts() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n3")
    net.tick(times=5 * ELECTION)
    assert leader.role is Role.LEADER and leader.term == 1


def test_follower_with_stale_log_cannot_win_election() -> None:
    net = Net(["n1", "n2", "n3"], pre_vote=False, check_quorum=False)
    net.elect("n1")
    net.isolate("n3")
    net.nodes["n1"].propose(b"committed")
    net.pump()
    assert net.nodes["n2"].status().commit == 2
    # The old leader vanishes; the stale n3 campaigns first and keeps trying.
    net.heal()
    net.isolate("n1")
    net.tick(["n3"], times=4 * ELECTION)
    assert net.nodes["n3"].role is not Role.LEADER
    rejections = [
        m for m in net.sent if m.type is MT.VOTE_RESP and m.from_id == "n2" and m.to == "n3"
    ]
    assert rejections and all(m.reject for m in rejections)
    net.elect("n2")
    assert net.nodes["n2"].role is Role.LEADER


def test_prevote_does_not_disrupt_stable_leader() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n3")
    net.tick(["n3"], times=10 * ELECTION)
    assert net.nodes["n3"].term == 1  # pre-votes never won, so the term never moved
    net.heal()
    net.tick(times=3 * ELECTION)
    assert leader.role is Role.LEADER and leader.term == 1
    assert net.nodes["n3"].leader == "n1"


def test_follower_hearing_from_live_leader_ignores_vote_requests() -> None:
    net = three()
    net.elect("n1")
    follower = net.nodes["n2"]
    log_last = follower.status().last_index
    follower.step(Message(MT.VOTE, "n3", "n2", term=5, index=log_last + 10, log_term=1))
    assert follower.term == 1 and follower.vote == "n1"
    assert not [m for m in follower.ready().messages if m.type is MT.VOTE_RESP]


def test_vote_for_leadership_transfer_overrides_the_lease() -> None:
    net = three()
    net.elect("n1")
    follower = net.nodes["n2"]
    last = follower.status().last_index
    follower.step(Message(MT.VOTE, "n3", "n2", term=2, index=last, log_term=1, context=b"transfer"))
    assert follower.term == 2 and follower.vote == "n3"


def test_stale_leader_learns_newer_term_from_append_response() -> None:
    net = three()
    old = net.elect("n1")
    net.isolate("n1")
    net.tick(["n2", "n3"], times=3 * ELECTION)  # the majority side elects a new leader
    assert {net.nodes["n2"].role, net.nodes["n3"].role} == {Role.LEADER, Role.FOLLOWER}
    assert old.role is Role.LEADER  # n1 did not tick: it still believes it leads
    old_term = old.term
    net.heal()
    net.tick(["n1"])
    assert old.role is Role.FOLLOWER and old.term > old_term


# -- replication ----------------------------------------------------------------


def test_new_leader_commits_previous_term_entries_only_via_noop() -> None:
    # n1 and n2 hold entry 2 from term 1, uncommitted; n1 wins term 2.
    old = [Entry(1, 1, EntryKind.NOOP, b""), Entry(1, 2, EntryKind.NORMAL, b"old")]
    nodes = {
        node_id: RaftNode(
            node_id,
            voters=["n1", "n2", "n3"],
            hard_state=HardState(1, None, 1),
            entries=entries,
            snapshot=None,
            rng=random.Random(node_id),
            election_ticks=ELECTION,
            pre_vote=False,
        )
        for node_id, entries in (("n1", old), ("n2", old), ("n3", old[:1]))
    }
    leader = nodes["n1"]
    leader.step(Message(MT.VOTE_RESP, "n2", "n1", term=0))  # ignored: wrong term
    for _ in range(3 * ELECTION):
        leader.tick()
        if leader.role is Role.CANDIDATE:
            break
    leader.step(Message(MT.VOTE_RESP, "n2", "n1", term=leader.term))
    assert leader.role is Role.LEADER and leader.status().last_index == 3
    # A majority (n1, n2) holds entry 2, but it is from term 1: no commit yet.
    leader.step(Message(MT.APPEND_RESP, "n2", "n1", term=leader.term, index=2))
    assert leader.status().commit == 1
    # Once the NOOP of term 2 is on a majority, both commit together.
    leader.step(Message(MT.APPEND_RESP, "n2", "n1", term=leader.term, index=3))
    assert leader.status().commit == 3


def test_lagging_follower_catches_up_by_snapshot() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n3")
    for i in range(20):
        leader.propose(f"cmd{i}".encode())
        net.pump()
    applied = leader.status().applied
    meta = leader.compact(applied)
    assert meta.voters == ("n1", "n2", "n3") and meta.index == applied
    net.heal()
    net.tick(times=3)
    snapshots = [m for m in net.sent if m.type is MT.SNAPSHOT and m.to == "n3"]
    assert snapshots and snapshots[0].snapshot == meta
    assert net.storage["n3"].snapshot == meta
    leader.propose(b"after")
    net.pump()
    assert net.nodes["n3"].status().commit == leader.status().commit
    assert net.applied_data("n3") == [b"after"]


def test_appends_to_a_lagging_follower_are_capped_in_bytes_and_an_oversized_entry_goes_alone(
) -> None:
    mib = 1 << 20
    net = Net(["n1", "n2", "n3"], max_append_bytes=3 * mib)
    leader = net.elect("n1")
    net.isolate("n3")
    sizes = [mib] * 7 + [5 * mib] + [mib] * 4
    for n, size in enumerate(sizes):
        leader.propose(bytes([n]) * size)
    net.pump()
    net.sent.clear()
    net.heal()
    net.tick(times=3)
    assert net.storage["n3"].entries == net.storage["n1"].entries
    appends = [m for m in net.sent if m.type is MT.APPEND and m.to == "n3" and m.entries]
    for append in appends:
        data = sum(len(e.data) for e in append.entries)
        assert data <= 3 * mib or len(append.entries) == 1, [len(e.data) for e in append.entries]
        assert len(append.entries) <= 3
    assert any(len(m.entries) == 3 for m in appends)
    assert any([len(e.data) for e in m.entries] == [5 * mib] for m in appends)


def test_follower_rejection_hint_skips_a_whole_divergent_term() -> None:
    log = RaftLog(
        None,
        [Entry(1, 1, EntryKind.NORMAL, b"")]
        + [Entry(2, i, EntryKind.NORMAL, b"") for i in range(2, 50)],
        commit=1,
        applied=0,
    )
    # A leader whose entry 49 has term 1 learns in one reply that the follower's
    # whole run of term-2 entries diverges, and probes at 1 next, not at 48.
    assert log.find_conflict_by_term(49, 1) == (1, 1)
    assert log.find_conflict_by_term(49, 2) == (49, 2)


def test_leader_overwrites_divergent_follower_suffix_in_few_round_trips() -> None:
    ids = ["n1", "n2", "n3"]
    base = [Entry(1, 1, EntryKind.NOOP, b"")]
    stale = base + [Entry(2, i, EntryKind.NORMAL, b"stale") for i in range(2, 60)]
    good = base + [Entry(3, 2, EntryKind.NOOP, b"")]
    nodes = {
        "n1": (HardState(3, "n1", 1), good),
        "n2": (HardState(3, "n1", 1), good),
        "n3": (HardState(2, None, 1), stale),
    }
    net = Net([], pre_vote=False)
    net.ids = ids
    for node_id, (hs, entries) in nodes.items():
        net.storage[node_id] = Storage(hs, list(entries))
        net.nodes[node_id] = RaftNode(
            node_id,
            voters=ids,
            hard_state=hs,
            entries=entries,
            snapshot=None,
            rng=random.Random(node_id),
            election_ticks=ELECTION,
            pre_vote=False,
        )
    leader = net.elect("n1")
    leader.propose(b"new")
    net.pump()
    rejects = [m for m in net.sent if m.type is MT.APPEND_RESP and m.reject and m.from_id == "n3"]
    assert len(rejects) <= 2
    assert net.nodes["n3"].status().last_index == leader.status().last_index
    assert net.storage["n3"].entries == net.storage["n1"].entries


def test_ready_entries_overwrite_a_conflicting_suffix() -> None:
    entries = [Entry(1, i, EntryKind.NORMAL, b"old") for i in range(1, 6)]
    node = RaftNode(
        "n2",
        voters=["n1", "n2", "n3"],
        hard_state=HardState(1, "n1", 1),
        entries=entries,
        snapshot=None,
        rng=random.Random(0),
    )
    new = Entry(2, 3, EntryKind.NORMAL, b"new")
    node.step(Message(MT.APPEND, "n3", "n2", term=2, index=2, log_term=1, entries=(new,), commit=1))
    rd = node.ready()
    assert rd.entries == (new,)
    assert rd.hard_state == HardState(2, None, 1)
    assert rd.must_sync


def test_messages_wait_until_hard_state_is_in_the_same_ready() -> None:
    net = three()
    node = net.nodes["n1"]
    for _ in range(3 * ELECTION):
        node.tick()
        if node.has_ready():
            break
    rd = node.ready()
    assert {m.type for m in rd.messages} == {MT.PRE_VOTE}
    with pytest.raises(ReadyPending):
        node.ready()
    node.advance(rd)
    node.step(Message(MT.PRE_VOTE_RESP, "n2", "n1", term=node.term + 1))
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == "n1"
    assert {m.type for m in rd.messages} == {MT.VOTE}


def test_proposals_between_readies_leave_as_one_append_per_follower() -> None:
    net = three()
    leader = net.elect("n1")
    for i in range(5):
        leader.propose(f"cmd{i}".encode())
    rd = leader.ready()
    appends = [m for m in rd.messages if m.type is MT.APPEND]
    assert sorted(m.to for m in appends) == ["n2", "n3"]
    assert all(len(m.entries) == 5 for m in appends)
    assert len(rd.entries) == 5
    leader.advance(rd)


def test_propose_on_follower_names_the_leader() -> None:
    net = three()
    net.elect("n1")
    with pytest.raises(NotLeader) as raised:
        net.nodes["n2"].propose(b"x")
    assert raised.value.leader_id == "n1"


# -- ReadIndex ------------------------------------------------------------------


def test_read_index_waits_for_heartbeat_quorum() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n1")
    leader.read_index(b"r1")
    net.pump()
    assert net.storage["n1"].read_states == []
    net.heal()
    net.tick(["n1"])
    assert net.storage["n1"].read_states == [ReadState(b"r1", leader.status().commit)]


def test_read_index_on_new_leader_waits_for_its_noop_to_commit() -> None:
    net = three()
    node = net.nodes["n1"]
    net.drop_types = {MT.APPEND_RESP}
    net.elect("n1")
    node.read_index(b"r1")
    net.tick(["n1"], times=2)
    assert net.storage["n1"].read_states == []
    net.heal()
    net.tick(["n1"], times=2)
    assert net.storage["n1"].read_states == [ReadState(b"r1", 1)]


def test_follower_read_index_is_forwarded_to_the_leader() -> None:
    net = three()
    leader = net.elect("n1")
    leader.propose(b"x")
    net.pump()
    net.nodes["n3"].read_index(b"f1")
    net.pump()
    net.tick(["n1"])
    assert net.storage["n3"].read_states == [ReadState(b"f1", 2)]


def test_read_index_without_known_leader_raises_not_leader() -> None:
    net = three()
    with pytest.raises(NotLeader):
        net.nodes["n1"].read_index(b"r")


# -- leadership transfer ----------------------------------------------------------


def test_transfer_leadership_to_up_to_date_follower() -> None:
    net = three()
    leader = net.elect("n1")
    leader.transfer_leadership("n2")
    net.pump()
    assert net.nodes["n2"].role is Role.LEADER
    assert net.nodes["n2"].term == 2
    assert leader.role is Role.FOLLOWER and leader.leader == "n2"


def test_transfer_to_lagging_follower_waits_until_it_caught_up() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n3")
    leader.propose(b"x")
    net.pump()
    leader.transfer_leadership("n3")
    with pytest.raises(ProposalDropped):
        leader.propose(b"y")
    net.pump()
    assert not [m for m in net.sent if m.type is MT.TIMEOUT_NOW]
    net.heal()
    net.tick(["n1"])
    assert net.nodes["n3"].role is Role.LEADER
    assert net.applied_data("n3") == [b"x"]


def test_transfer_gives_up_after_an_election_timeout() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n3")
    net.drop_types = {MT.TIMEOUT_NOW}
    leader.transfer_leadership("n3")
    net.tick(["n1", "n2"], times=ELECTION)
    assert leader.role is Role.LEADER
    leader.propose(b"accepted again")


def test_transfer_to_non_voter_is_refused() -> None:
    net = three()
    leader = net.elect("n1")
    with pytest.raises(TransferRefused):
        leader.transfer_leadership("n9")


# -- membership -------------------------------------------------------------------


def test_added_voter_learns_configuration_from_the_log() -> None:
    net = three()
    leader = net.elect("n1")
    newcomer = net.add("n4", voters=())
    assert newcomer.voters == ()
    leader.propose_conf_change(ConfChange.add("n4"))
    assert leader.voters == ("n1", "n2", "n3", "n4")  # effective once appended
    net.pump()
    net.tick(["n1"], times=2)
    assert newcomer.voters == ("n1", "n2", "n3", "n4")
    assert newcomer.status().commit == leader.status().commit
    # The new voter now counts: with n2 and n3 gone n1+n4 are not a majority of 4.
    net.isolate("n2")
    net.blocked |= {("n1", "n3"), ("n3", "n1")}
    index = leader.propose(b"needs three of four")
    net.pump()
    assert leader.status().commit < index


def test_second_conf_change_refused_while_first_uncommitted() -> None:
    net = three()
    leader = net.elect("n1")
    net.isolate("n1")
    leader.propose_conf_change(ConfChange.add("n4"))
    with pytest.raises(ConfChangeInProgress):
        leader.propose_conf_change(ConfChange.add("n5"))


def test_conf_change_refused_before_new_leader_commits_in_its_term() -> None:
    net = three()
    net.drop_types = {MT.APPEND_RESP}
    leader = net.elect("n1")
    with pytest.raises(ConfChangeInProgress):
        leader.propose_conf_change(ConfChange.add("n4"))


def test_invalid_conf_changes_are_refused() -> None:
    net = three()
    leader = net.elect("n1")
    with pytest.raises(InvalidConfChange):
        leader.propose_conf_change(ConfChange.add("n2"))
    with pytest.raises(InvalidConfChange):
        leader.propose_conf_change(ConfChange.remove("n9"))


def test_removed_leader_steps_down_once_removal_commits() -> None:
    net = three()
    leader = net.elect("n1")
    leader.propose_conf_change(ConfChange.remove("n1"))
    with pytest.raises(NotLeader):
        leader.propose(b"x")
    net.pump()
    assert leader.role is Role.FOLLOWER
    successor = net.leader()  # handed over with TimeoutNow, no election timeout needed
    assert successor.id in ("n2", "n3") and successor.voters == ("n2", "n3")
    net.tick(["n1"], times=5 * ELECTION)
    assert leader.role is Role.FOLLOWER  # not a voter any more: never campaigns


def test_truncated_conf_entry_reverts_the_configuration() -> None:
    node = RaftNode(
        "n2",
        voters=["n1", "n2", "n3"],
        hard_state=HardState(1, "n1", 1),
        entries=[Entry(1, 1, EntryKind.NOOP, b"")],
        snapshot=None,
        rng=random.Random(0),
    )
    change = ConfChangeEntry(ConfChange.add("n4"), ("n1", "n2", "n3", "n4")).to_bytes()
    conf = Entry(1, 2, EntryKind.CONF_CHANGE, change)
    node.step(Message(MT.APPEND, "n1", "n2", term=1, index=1, log_term=1, entries=(conf,)))
    assert node.voters == ("n1", "n2", "n3", "n4")
    overwrite = Entry(2, 2, EntryKind.NOOP, b"")
    node.step(Message(MT.APPEND, "n3", "n2", term=2, index=1, log_term=1, entries=(overwrite,)))
    assert node.voters == ("n1", "n2", "n3")


def test_configuration_in_the_log_wins_over_bootstrap_voters_on_restart() -> None:
    change = ConfChangeEntry(ConfChange.remove("n3"), ("n1", "n2")).to_bytes()
    node = RaftNode(
        "n1",
        voters=["n1", "n2", "n3"],
        hard_state=HardState(1, "n1", 2),
        entries=[Entry(1, 1, EntryKind.NOOP, b""), Entry(1, 2, EntryKind.CONF_CHANGE, change)],
        snapshot=None,
        rng=random.Random(0),
    )
    assert node.voters == ("n1", "n2")
    snap = RaftNode(
        "n1",
        voters=["n1"],
        hard_state=HardState(1, None, 7),
        entries=[],
        snapshot=SnapshotMeta(7, 1, ("n1", "n5")),
        rng=random.Random(0),
    )
    assert snap.voters == ("n1", "n5") and snap.status().applied == 7


# -- restore, compaction, wire ---------------------------------------------------


def test_restart_resumes_term_vote_and_log() -> None:
    net = three()
    leader = net.elect("n1")
    leader.propose(b"x")
    net.pump()
    store = net.storage["n2"]
    revived = RaftNode(
        "n2",
        voters=["n1", "n2", "n3"],
        hard_state=store.hard_state,
        entries=store.entries,
        snapshot=store.snapshot,
        rng=random.Random(0),
        applied=len(store.applied),
    )
    status = revived.status()
    assert (revived.term, revived.vote) == (1, "n1")
    assert status.last_index == 2 and status.commit == 2 and status.applied == 2
    assert not revived.has_ready()


def test_restore_rejects_a_log_with_holes() -> None:
    with pytest.raises(InconsistentStorage):
        RaftNode(
            "n1",
            voters=["n1"],
            hard_state=HardState(1, None, 0),
            entries=[Entry(1, 1, EntryKind.NOOP, b""), Entry(1, 3, EntryKind.NOOP, b"")],
            snapshot=None,
            rng=random.Random(0),
        )


def test_compact_refuses_unapplied_or_already_compacted_index() -> None:
    net = Net(["n1"])
    leader = net.elect("n1")
    leader.propose(b"x")
    with pytest.raises(InvalidCompaction):
        leader.compact(2)  # not applied: the Ready is still with the driver
    net.pump()
    leader.compact(2)
    with pytest.raises(InvalidCompaction):
        leader.compact(1)


def test_message_survives_msgpack_round_trip() -> None:
    msg = Message(
        MT.APPEND,
        "n1",
        "n2",
        term=3,
        log_term=2,
        index=7,
        entries=(Entry(3, 8, EntryKind.NORMAL, b"\x00\n\xff"),),
        commit=6,
        snapshot=SnapshotMeta(5, 2, ("n1", "n2")),
        context=b"ctx",
    )
    wire = msgpack.unpackb(msgpack.packb(msg.to_wire()), raw=False)
    assert Message.from_wire(wire) == msg


@pytest.mark.parametrize(
    "raw",
    [
        [1, 2, 3],
        {"type": 99, "from": "a", "to": "b"},
        {"type": 1, "from": 5, "to": "b"},
        {"type": 1, "from": "a", "to": "b", "term": -1},
        {"type": 1, "from": "a", "to": "b", "entries": [[1, 2]]},
    ],
)
def test_malformed_wire_message_raises_typed_error(raw: object) -> None:
    with pytest.raises(MalformedMessage):
        Message.from_wire(raw)


def test_ready_is_a_value_the_driver_can_inspect() -> None:
    net = Net(["n1"])
    net.elect("n1")
    node = net.nodes["n1"]
    node.propose(b"x")
    rd: Ready = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert rd.entries == rd.committed_entries
    node.advance(rd)
    assert not node.has_ready()
    status = node.status()
    assert status.role is Role.LEADER and status.applied == 2 and status.voters == ("n1",)


def test_removed_follower_learns_its_removal_and_never_campaigns() -> None:
    net = Net(["n1", "n2", "n3"], pre_vote=False, check_quorum=False)
    leader = net.elect("n1")
    leader.propose_conf_change(ConfChange.remove("n3"))
    net.pump()
    removed = net.nodes["n3"]
    assert removed.voters == ("n1", "n2")
    assert "n3" not in leader.status().progress
    term = removed.term
    net.tick(["n3"], times=5 * ELECTION)
    assert removed.term == term and removed.role is Role.FOLLOWER
