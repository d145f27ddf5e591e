"""The leader's queue of ReadIndex reads (consensus/raft/read_only.py): who
acknowledged each read, and which reads one confirmation releases."""

from __future__ import annotations

from consensus.raft.read_only import PendingReads


def queue_of(*contexts: bytes) -> PendingReads:
    reads = PendingReads()
    for number, context in enumerate(contexts, start=1):
        reads.add_request(context, index=10 * number, requester=f"client-{number}", leader="a")
    return reads


def test_an_empty_queue_sends_heartbeats_without_a_context() -> None:
    assert PendingReads().last_context() == b""


def test_a_new_read_starts_with_the_leaders_own_acknowledgement() -> None:
    reads = queue_of(b"r1")
    assert b"r1" in reads
    assert reads.recv_ack(b"r1", "b") == {"a": True, "b": True}


def test_acknowledgements_accumulate_for_each_read_separately() -> None:
    reads = queue_of(b"r1", b"r2")
    reads.recv_ack(b"r1", "b")
    reads.recv_ack(b"r1", "b")  # a duplicated heartbeat response counts once
    assert reads.recv_ack(b"r2", "c") == {"a": True, "c": True}
    assert reads.recv_ack(b"r1", "c") == {"a": True, "b": True, "c": True}


def test_an_acknowledgement_for_a_read_not_waiting_is_ignored() -> None:
    reads = queue_of(b"r1")
    assert reads.recv_ack(b"gone", "b") is None
    assert b"gone" not in reads
    assert reads.recv_ack(b"r1", "b") == {"a": True, "b": True}


def test_heartbeats_carry_the_newest_reads_context() -> None:
    assert queue_of(b"r1", b"r2", b"r3").last_context() == b"r3"


def test_confirming_a_read_releases_it_and_every_earlier_read_oldest_first() -> None:
    reads = queue_of(b"r1", b"r2", b"r3")
    done = reads.advance(b"r2")
    assert [(r.context, r.index, r.requester) for r in done] == [
        (b"r1", 10, "client-1"),
        (b"r2", 20, "client-2"),
    ]
    assert b"r1" not in reads and b"r2" not in reads
    assert b"r3" in reads
    assert reads.last_context() == b"r3"


def test_confirming_the_newest_read_empties_the_queue() -> None:
    reads = queue_of(b"r1", b"r2")
    assert len(reads.advance(b"r2")) == 2
    assert reads.last_context() == b""
    assert reads.recv_ack(b"r1", "b") is None


def test_confirming_a_read_not_waiting_releases_nothing() -> None:
    reads = queue_of(b"r1")
    assert reads.advance(b"gone") == []
    assert b"r1" in reads
