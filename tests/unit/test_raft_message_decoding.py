"""A Raft message from the wire is taken only when every field has its type and range.

A secret holder's frame is decoded before anything checks who sent it, so a
term no group could reach (the node adopts it, then cannot encode term + 1),
a count given where bytes belong (`bytes(n)` allocates n zero bytes), or a
voter list that is a string must be refused as malformed, which drops the
connection and leaves the node running.
"""

from __future__ import annotations

from typing import Any

import pytest

from consensus.raft.errors import MalformedMessage
from consensus.raft.messages import Message, MessageType

BASE: dict[str, Any] = {"type": int(MessageType.APPEND), "from": "n2", "to": "n1", "term": 3}
ENTRY = [3, 7, 0, b"command"]
SNAPSHOT = [7, 3, ["n1", "n2"]]


@pytest.mark.parametrize(
    "change",
    [
        {"term": 2**64 - 1},
        {"term": 2**63},
        {"index": 2**63},
        {"commit": 2**64 - 1},
        {"log_term": -1},
        {"reject_hint": 1.5},
        {"context": 1 << 40},
        {"context": "text"},
        {"entries": [[2**64 - 1, 1, 0, b""]]},
        {"entries": [[3, 7, 0, 1 << 40]]},
        {"entries": [[3.5, 7, 0, b""]]},
        {"entries": [[3, -7, 0, b""]]},
        {"entries": "abcd"},
        {"snapshot": [7, 3, "n1n2"]},
        {"snapshot": [7, 3, [1, 2]]},
        {"snapshot": [2**64, 3, ["n1"]]},
    ],
    ids=repr,
)
def test_a_field_out_of_type_or_range_makes_the_message_malformed(change: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessage):
        Message.from_wire({**BASE, **change})


def test_a_message_with_every_field_in_range_decodes_as_sent() -> None:
    message = Message.from_wire(
        {**BASE, "entries": [ENTRY], "snapshot": SNAPSHOT, "context": b"c", "commit": 2**62 - 1}
    )
    assert message.entries[0].data == b"command"
    assert message.snapshot is not None and message.snapshot.voters == ("n1", "n2")
    assert message.commit == 2**62 - 1
    assert Message.from_wire(message.to_wire()) == message
