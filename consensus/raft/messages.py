"""The messages Raft peers exchange, and their msgpack-friendly wire form.

One small frozen dataclass covers every message type, as in etcd-io/raft:
fields a type does not use keep their zero value. `to_wire()` turns a message
into a plain map of ints, strings, bytes and lists that msgpack encodes
without extension types (never pickle); `from_wire()` checks every field so a
malformed frame from a peer fails with `MalformedMessage` instead of
corrupting the core.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from consensus.raft.errors import MalformedMessage
from consensus.raft.types import Entry, SnapshotMeta, wire_bytes, wire_count

# A vote request carrying this context comes from a leadership transfer, so
# voters must not ignore it because they still hear from the current leader.
TRANSFER_CONTEXT = b"transfer"


class MessageType(enum.IntEnum):
    APPEND = 1
    APPEND_RESP = 2
    HEARTBEAT = 3
    HEARTBEAT_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message.

    APPEND: `index`/`log_term` name the entry preceding `entries`; `commit` is
    the leader's commit index. APPEND_RESP: `index` is the follower's last
    matching index, or on `reject` the rejected `index` with `reject_hint` and
    `log_term` pointing at where the follower's log may diverge. VOTE and
    PRE_VOTE: `index`/`log_term` describe the candidate's last entry.
    SNAPSHOT carries only the metadata; the driver moves the bytes. READ_INDEX
    is sent with term 0 because it is a forwarded request, not a protocol step.
    """

    type: MessageType
    from_id: str
    to: str
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: SnapshotMeta | None = None
    context: bytes = b""

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": int(self.type),
            "from": self.from_id,
            "to": self.to,
            "term": self.term,
            "log_term": self.log_term,
            "index": self.index,
            "entries": [e.to_wire() for e in self.entries],
            "commit": self.commit,
            "reject": self.reject,
            "reject_hint": self.reject_hint,
            "snapshot": None if self.snapshot is None else self.snapshot.to_wire(),
            "context": self.context,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Message:
        try:
            if not isinstance(raw, dict):
                raise TypeError("a message must be a map")
            snapshot = raw.get("snapshot")
            message = cls(
                type=MessageType(raw["type"]),
                from_id=_string(raw["from"]),
                to=_string(raw["to"]),
                term=wire_count(raw.get("term", 0)),
                log_term=wire_count(raw.get("log_term", 0)),
                index=wire_count(raw.get("index", 0)),
                entries=tuple(Entry.from_wire(e) for e in _entries(raw.get("entries", ()))),
                commit=wire_count(raw.get("commit", 0)),
                reject=bool(raw.get("reject", False)),
                reject_hint=wire_count(raw.get("reject_hint", 0)),
                snapshot=None if snapshot is None else SnapshotMeta.from_wire(snapshot),
                context=wire_bytes(raw.get("context", b"")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(str(exc)) from exc
        return message


def _entries(value: Any) -> list | tuple:
    if not isinstance(value, list | tuple):
        raise TypeError("entries come as a list")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


