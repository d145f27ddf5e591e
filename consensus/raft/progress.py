"""The leader's view of each voter's log, like etcd-io/raft's `tracker/progress.go`.

A leader keeps one `Progress` per voter: the highest index the voter is known
to hold (`match`), the next index to send it (`next`), and whether it is being
probed, streamed to, or is installing a snapshot. The protocol logic in
`core.py` decides when to move between those states; this module only keeps
the bookkeeping consistent, so the rules for stale acknowledgements and
rejections live in one place. `FollowerProgress` is the frozen copy of it that
`RaftNode.status()` hands out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ProgressState(enum.Enum):
    """How the leader replicates to one follower: PROBE sends one append at a
    time until it finds where the logs match, REPLICATE streams optimistically,
    SNAPSHOT waits for the follower to install a snapshot."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True, slots=True)
class FollowerProgress:
    match: int
    next: int
    state: ProgressState
    recent_active: bool


class Progress:
    """The leader's view of one voter's log."""

    __slots__ = (
        "match",
        "next",
        "state",
        "paused",
        "pending_snapshot",
        "snapshot_ticks",
        "last_heard",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        # The leader's tick count when this voter last answered: the leader
        # counts a voter as active (check-quorum) and worth a snapshot only
        # while this is less than an election timeout old.
        self.last_heard = 0

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        return self.state is ProgressState.SNAPSHOT

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; False if it tells us nothing new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.paused = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append at `rejected`; False if it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.paused = False
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.paused = False
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
