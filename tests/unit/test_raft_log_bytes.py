"""The Raft log counts its entries in bytes, and the core bounds what it holds by them.

The byte figures of `RaftLog` are checked against a plain model through
random runs of appends (overwriting conflicting suffixes), commits,
applies, compactions and snapshot restores; the core's limits are checked on
the tiny controllable cluster of `test_raft_core`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.raft.core import ProposalsBackedUp, Role
from consensus.raft.log import RaftLog
from consensus.raft.types import Entry, EntryKind, SnapshotMeta
from tests.unit.test_raft_core import Net

MiB = 1 << 20

# One step of a run: (operation, two numbers it reads as it needs them).
steps = st.lists(
    st.tuples(
        st.sampled_from(["append", "commit", "apply", "compact", "restore"]),
        st.integers(min_value=0, max_value=1_000),
        st.lists(st.integers(min_value=0, max_value=3_000), min_size=1, max_size=6),
    ),
    max_size=60,
)


def _bytes_in(sizes: dict[int, int], lo: int, hi: int) -> int:
    return sum(size for index, size in sizes.items() if lo <= index <= hi)


@given(steps)
def test_the_log_counts_its_bytes_through_appends_truncations_and_compactions(
    run: list[tuple[str, int, list[int]]],
) -> None:
    log = RaftLog(None, [], 0, 0)
    sizes: dict[int, int] = {}  # the model: index -> bytes of every entry held
    term = 1
    for op, pick, lengths in run:
        last = log.last_index()
        if op == "append":
            # Anywhere after the commit index: a follower overwriting a suffix
            # the new leader does not share, or a plain append at the end.
            first = log.committed + 1 + pick % (last - log.committed + 1)
            term += 1
            entries = [
                Entry(term, first + n, EntryKind.NORMAL, b"x" * length)
                for n, length in enumerate(lengths)
            ]
            log.append(entries)
            sizes = {i: s for i, s in sizes.items() if i < first}
            sizes.update({e.index: len(e.data) for e in entries})
        elif op == "commit" and last > log.committed:
            log.commit_to(log.committed + 1 + pick % (last - log.committed))
        elif op == "apply" and log.committed > log.applied:
            log.applied_to(log.applied + 1 + pick % (log.committed - log.applied))
        elif op == "compact" and log.applied > log.offset:
            index = log.offset + 1 + pick % (log.applied - log.offset)
            log.compact(SnapshotMeta(index, log.term(index) or 0, ("n1",)))
            sizes = {i: s for i, s in sizes.items() if i > index}
        elif op == "restore":
            index = last + 1 + pick
            log.restore(SnapshotMeta(index, term, ("n1",)))
            log.snapshot_installed(SnapshotMeta(index, term, ("n1",)))
            sizes = {}
        assert log.size_bytes() == sum(sizes.values())
        assert log.applied_bytes() == _bytes_in(sizes, 0, log.applied)
        assert log.uncommitted_bytes() == _bytes_in(sizes, log.committed + 1, log.last_index())
        for index in (log.offset, log.offset + 1, log.committed, log.last_index()):
            assert log.bytes_through(index) == _bytes_in(sizes, 0, index)


def test_a_restarted_log_counts_the_entries_it_was_handed() -> None:
    entries = [Entry(1, i, EntryKind.NORMAL, b"y" * (100 * i)) for i in range(3, 9)]
    log = RaftLog(SnapshotMeta(4, 1, ("n1",)), entries, commit=6, applied=5)
    # Entries 3 and 4 are covered by the snapshot and not held.
    assert log.size_bytes() == 100 * (5 + 6 + 7 + 8)
    assert log.applied_bytes() == 500
    assert log.uncommitted_bytes() == 700 + 800


def test_a_leader_cut_off_from_its_followers_refuses_proposals_past_the_uncommitted_limit(
) -> None:
    net = Net(["n1", "n2", "n3"], max_uncommitted_bytes=3 * MiB)
    leader = net.elect("n1")
    net.isolate("n1")
    for n in range(3):
        leader.propose(bytes([n]) * MiB)
        net.pump()
    assert leader.status().uncommitted_bytes == 3 * MiB
    with pytest.raises(ProposalsBackedUp):
        leader.propose(b"one more")
    assert leader.status().last_index == 4  # the NOOP and three proposals, nothing more

    net.heal()
    net.tick(["n1"])
    assert leader.role is Role.LEADER and leader.status().uncommitted_bytes == 0
    leader.propose(b"one more")
    net.pump()
    assert net.applied_data("n2")[-1] == b"one more"


def test_a_single_entry_larger_than_the_uncommitted_limit_is_taken_when_nothing_waits() -> None:
    net = Net(["n1", "n2", "n3"], max_uncommitted_bytes=MiB)
    leader = net.elect("n1")
    leader.propose(b"z" * (2 * MiB))
    net.pump()
    assert net.applied_data("n3") == [b"z" * (2 * MiB)]


def test_committed_entries_are_handed_to_apply_in_batches_capped_in_bytes() -> None:
    net = Net(["n1"], max_apply_bytes=2 * MiB)
    leader = net.elect("n1")
    sizes = [MiB, MiB, MiB, 3 * MiB, MiB]
    for n, size in enumerate(sizes):
        leader.propose(bytes([n]) * size)
    batches = []
    while leader.has_ready():
        rd = leader.ready()
        batches.append([len(e.data) for e in rd.committed_entries if e.kind is EntryKind.NORMAL])
        leader.advance(rd)
    assert [size for batch in batches for size in batch] == sizes
    assert all(sum(batch) <= 2 * MiB or len(batch) == 1 for batch in batches), batches


def test_compaction_frees_the_bytes_of_the_entries_it_drops() -> None:
    net = Net(["n1"])
    leader = net.elect("n1")
    for n in range(4):
        leader.propose(bytes([n]) * 1000)
        net.pump()
    assert leader.log_bytes() == 4000 and leader.applied_log_bytes() == 4000
    leader.compact(leader.status().applied - 1)
    assert leader.log_bytes() == 1000 and leader.status().log_bytes == 1000
