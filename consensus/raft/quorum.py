"""Majority arithmetic over one configuration of voters, like etcd-io/raft's
`quorum/majority.go`.

Raft makes every decision by majority: an election is won by the votes of a
majority, an entry is committed once a majority holds it, a leader stays in
charge while a majority answers it, and a ReadIndex read is confirmed once a
majority acknowledges the leader's heartbeat. `majority` is the one place
that says how many voters that is; `committed_index` and `vote_result` answer
those questions for the core, so a change to the rule cannot leave one of
them behind. Only the voters named count: answers from anyone else (a removed
peer, a node not yet added) are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping


class VoteResult(enum.Enum):
    WON = "won"
    LOST = "lost"
    PENDING = "pending"


def majority(voter_count: int) -> int:
    """How many of `voter_count` voters make a majority: the smallest group
    size at which any two groups share a voter, which is what rules out two
    leaders in one term or two different entries committed at one index."""
    return voter_count // 2 + 1


def committed_index(voters: Collection[str], match_of: Callable[[str], int]) -> int:
    """The highest index that a majority of `voters` holds; `match_of(voter)`
    is the highest index that voter is known to hold (0 when unknown)."""
    if not voters:
        return 0  # no majority exists, so nothing is held by one
    matches = sorted((match_of(voter) for voter in voters), reverse=True)
    # Each of the first `majority` voters holds at least this index.
    return matches[majority(len(voters)) - 1]


def vote_result(voters: Collection[str], votes: Mapping[str, bool]) -> VoteResult:
    """WON once a majority of `voters` said yes, LOST once a majority said no,
    PENDING otherwise; a voter missing from `votes` has not answered yet.

    Unlike etcd, this does not report LOST as soon as winning becomes
    impossible: with an even number of voters, half of them saying no leaves
    the result PENDING."""
    needed = majority(len(voters))
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    if granted >= needed:
        return VoteResult.WON
    if rejected >= needed:
        return VoteResult.LOST
    return VoteResult.PENDING
