"""The values the Raft core, its write-ahead log and its transport exchange.

They are plain frozen dataclasses so the core stays pure and a simulator can
copy, compare and replay them; each converts to and from a msgpack-friendly
tuple or map at the edges (the log on disk, frames on the wire).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# Terms and indexes stay far below SQLite's and msgpack's 64-bit integers, with
# room to count on: no group reaches 2**62 elections or entries, so a larger
# number on the wire is garbage, never a value to adopt.
MAX_COUNT = 2**62


def wire_count(value: Any) -> int:
    """A term, index or commit read from the wire or the log: an int in range."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_COUNT:
        raise ValueError(f"expected an integer from 0 to 2**62, got {value!r}")
    return value


def wire_bytes(value: Any) -> bytes:
    """Bytes read from the wire: never a count to build them from (`bytes(n)`)."""
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return bytes(value)


def wire_ids(value: Any) -> tuple[str, ...]:
    """A list of node ids read from the wire: never a string spelt out letter by letter."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of node ids")
    return tuple(value)


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
        return cls(wire_count(term), wire_count(index), EntryKind(kind), wire_bytes(data))


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
        if vote is not None and not isinstance(vote, str):
            raise TypeError("a vote names a node id")
        return cls(wire_count(term), vote, wire_count(commit))


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
        return cls(wire_count(index), wire_count(term), wire_ids(voters))
