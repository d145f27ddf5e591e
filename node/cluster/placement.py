"""Where a chunk lives: rendezvous (highest-random-weight) hashing over the members.

Every node computes the same answer from the same inputs — the chunk id, the
member list and their zones, all from the replicated state — so no table of
locations is kept anywhere. Each member gets a pseudo-random score for the
chunk; the ranking by score is the order in which nodes are asked to hold
it, and the owners are the first R of that ranking with distinct zones
preferred. Adding a node moves to it only the chunks it now outranks the old
owners for (about 1/N of them) and moves nothing between the old nodes.
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


def owners(chunk_id: str, members: Sequence[Placed], replication: int) -> list[Placed]:
    """The R nodes that should hold `chunk_id` (R capped at the member count)."""
    return spread(ranking(chunk_id, members), min(replication, len(members)))


def preference(chunk_id: str, members: Sequence[Placed], replication: int) -> list[Placed]:
    """All members in the order to write or look for the chunk: owners first, then
    the rest of the ranking (where hinted copies land when an owner is down)."""
    first = owners(chunk_id, members, replication)
    return first + [m for m in ranking(chunk_id, members) if m not in first]
