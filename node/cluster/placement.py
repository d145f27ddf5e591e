"""Where a chunk lives: rendezvous (highest-random-weight) hashing over the members.

Every node computes the same answer from the same inputs — the chunk id, the
member list and their zones, all from the replicated state — so no table of
locations is kept anywhere. Each member gets a pseudo-random score for the
chunk; the ranking by score is the order in which nodes are asked to hold
it, and the owners are the first R of that ranking with distinct zones
preferred. Adding a node moves to it only the chunks it now outranks the old
owners for (about 1/N of them) and moves nothing between the old nodes.
A draining member is left out of the owners (the rest of its ranking moves
up, so only the chunks it owned change hands) but stays last in the
preference: it still holds its copies until the new owners have theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import blake3


@dataclass(frozen=True, slots=True)
class Placed:
    """A member as placement sees it."""

    node_id: str
    zone: str = "default"
    draining: bool = False  # being drained: owns nothing, still serves what it holds


def score(chunk_id: str, node_id: str) -> int:
    digest = blake3.blake3(node_id.encode() + b"\x00" + chunk_id.encode()).digest(8)
    return int.from_bytes(digest, "big")


def ranking(chunk_id: str, members: Sequence[Placed]) -> list[Placed]:
    """Every member, best first, with ties (impossible in practice) broken by id."""
    return sorted(members, key=lambda m: (-score(chunk_id, m.node_id), m.node_id))


def spread(ranked: Sequence[Placed], count: int) -> list[Placed]:
    """The first `count` of a ranking, taking one node per zone before a second in any."""
    chosen: list[Placed] = []
    zones: set[str] = set()
    for member in ranked:
        if len(chosen) == count:
            return chosen
        if member.zone not in zones:
            chosen.append(member)
            zones.add(member.zone)
    for member in ranked:
        if len(chosen) == count:
            break
        if member not in chosen:
            chosen.append(member)
    return chosen


def eligible(members: Sequence[Placed]) -> list[Placed]:
    """The members that may own chunks: those not draining (all of them, should
    every one be draining, so a chunk always has somewhere to go)."""
    staying = [m for m in members if not m.draining]
    return staying or list(members)


def owners(chunk_id: str, members: Sequence[Placed], replication: int) -> list[Placed]:
    """The R nodes that should hold `chunk_id`, chosen among the members not
    draining (R capped at their count)."""
    candidates = eligible(members)
    return spread(ranking(chunk_id, candidates), min(replication, len(candidates)))


def preference(chunk_id: str, members: Sequence[Placed], replication: int) -> list[Placed]:
    """All members in the order to write or look for the chunk: owners first, then
    the rest of the ranking (where hinted copies land when an owner is down), the
    draining members last (they hold copies only until the owners have theirs)."""
    first = owners(chunk_id, members, replication)
    rest = [m for m in ranking(chunk_id, members) if m not in first]
    return first + [m for m in rest if not m.draining] + [m for m in rest if m.draining]
