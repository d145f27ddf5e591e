"""Single-server membership changes as they travel through the Raft log.

A change adds or removes exactly one voter. The leader writes it into a
CONF_CHANGE entry together with the full voter set that results, so any node
can learn the configuration from its log alone, without replaying earlier
changes (their entries may already be compacted into a snapshot). The core
uses the latest configuration in its log, committed or not, as the Raft
dissertation (§4.1) prescribes; a truncated conf entry takes its configuration
with it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from consensus.raft.errors import InvalidConfChange


class ConfChangeKind(enum.Enum):
    ADD_VOTER = "add"
    REMOVE_VOTER = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A request to add or remove one voter."""

    kind: ConfChangeKind
    node_id: str

    @classmethod
    def add(cls, node_id: str) -> ConfChange:
        return cls(ConfChangeKind.ADD_VOTER, node_id)

    @classmethod
    def remove(cls, node_id: str) -> ConfChange:
        return cls(ConfChangeKind.REMOVE_VOTER, node_id)

    def applied_to(self, voters: Iterable[str]) -> tuple[str, ...]:
        """The voter set after this change; refuses changes that change nothing
        or leave no voter, because such entries would only confuse operators."""
        current = set(voters)
        if self.kind is ConfChangeKind.ADD_VOTER:
            if self.node_id in current:
                raise InvalidConfChange(f"{self.node_id} is already a voter")
            current.add(self.node_id)
        else:
            if self.node_id not in current:
                raise InvalidConfChange(f"{self.node_id} is not a voter")
            current.discard(self.node_id)
            if not current:
                raise InvalidConfChange("cannot remove the last voter")
        return tuple(sorted(current))


@dataclass(frozen=True, slots=True)
class ConfChangeEntry:
    """The payload of a CONF_CHANGE entry: the change and the voters after it."""

    change: ConfChange
    voters: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {"op": self.change.kind.value, "node": self.change.node_id, "voters": list(self.voters)}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfChangeEntry:
        raw = msgpack.unpackb(data, raw=False)
        change = ConfChange(ConfChangeKind(raw["op"]), str(raw["node"]))
        return cls(change, tuple(str(v) for v in raw["voters"]))
