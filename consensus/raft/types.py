"""The values the Raft core, its write-ahead log and its transport exchange.

They are plain frozen dataclasses so the core stays pure and a simulator can
copy, compare and replay them; each converts to and from a msgpack-friendly
tuple or map at the edges (the log on disk, frames on the wire).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryKind(enum.IntEnum):
    """What an entry carries: a state-machine command, a no-op a new leader
    appends to commit entries of earlier terms, or a membership change."""

    NORMAL = 0
    NOOP = 1
    CONF_CHANGE = 2


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind
    data: bytes

    def to_wire(self) -> tuple[int, int, int, bytes]:
        return (self.term, self.index, int(self.kind), self.data)

    @classmethod
    def from_wire(cls, raw: list | tuple) -> Entry:
        term, index, kind, data = raw
        return cls(int(term), int(index), EntryKind(kind), bytes(data))


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def to_wire(self) -> tuple[int, str | None, int]:
        return (self.term, self.vote, self.commit)

    @classmethod
    def from_wire(cls, raw: list | tuple) -> HardState:
        term, vote, commit = raw
        return cls(int(term), vote, int(commit))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot stands in the log and which membership it includes."""

    index: int
    term: int
    voters: tuple[str, ...]

    def to_wire(self) -> tuple[int, int, list[str]]:
        return (self.index, self.term, list(self.voters))

    @classmethod
    def from_wire(cls, raw: list | tuple) -> SnapshotMeta:
        index, term, voters = raw
        return cls(int(index), int(term), tuple(voters))
