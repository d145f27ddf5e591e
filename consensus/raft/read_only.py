"""A leader's ReadIndex reads waiting for confirmation, like etcd-io/raft's
`read_only.go`.

A ReadIndex read (Raft dissertation §6.4) records the commit index when it
arrives, then waits until a majority has acknowledged a heartbeat that carries
its context, which proves that no newer leader existed when it arrived. The
queue keeps the reads in arrival order together with who acknowledged each of
them; the core decides when the acknowledgements make a majority and answers
the reads this releases. A heartbeat round confirms every read that arrived
before the one it carries, so confirming one read releases all earlier ones.
The core starts an empty queue each time it takes on a role (follower,
candidate, leader), so a read not confirmed before its leader steps down is
dropped and its caller times out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class PendingRead:
    """One read: what to answer (`index`), whom to answer (`requester`), and
    the peers that acknowledged a heartbeat carrying `context`."""

    context: bytes
    index: int
    requester: str
    acks: dict[str, bool]  # peer -> True, in the shape quorum.vote_result counts


class PendingReads:
    """The reads a leader has yet to confirm, oldest first; contexts are unique
    (the core drops a read whose context is already waiting)."""

    def __init__(self) -> None:
        self._queue: list[PendingRead] = []

    def __contains__(self, context: bytes) -> bool:
        return self._position(context) is not None

    def add_request(self, context: bytes, index: int, requester: str, leader: str) -> None:
        """Queue a read of `index` for `requester`; the leader's own
        acknowledgement counts from the start, since it sends the heartbeat."""
        self._queue.append(PendingRead(context, index, requester, {leader: True}))

    def recv_ack(self, context: bytes, peer: str) -> Mapping[str, bool] | None:
        """`peer` acknowledged the heartbeat carrying `context`: returns who has
        acknowledged that read so far, or None if no such read is waiting."""
        position = self._position(context)
        if position is None:
            return None
        acks = self._queue[position].acks
        acks[peer] = True
        return acks

    def advance(self, context: bytes) -> list[PendingRead]:
        """The read with `context` is confirmed: remove it and every read queued
        before it, and return them oldest first (none if it is not waiting)."""
        position = self._position(context)
        if position is None:
            return []
        done, self._queue = self._queue[: position + 1], self._queue[position + 1 :]
        return done

    def last_context(self) -> bytes:
        """The context for the next heartbeat: the newest read's, because
        confirming it confirms all the others; empty when nothing waits."""
        return self._queue[-1].context if self._queue else b""

    def _position(self, context: bytes) -> int | None:
        for position, read in enumerate(self._queue):
            if read.context == context:
                return position
        return None
