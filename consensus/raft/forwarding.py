"""Requests only the leader can take, taken here or forwarded to the leader.

A proposal, a membership change and a leadership transfer are handed to the
core; when the core says it is not the leader but knows who is, the request
travels to that leader as a frame of its own (`propose`, `conf`,
`transfer`), and the leader's driver hands it to its core the same way. A
forwarded request is best effort like every frame: whoever asked retries
until it sees the effect (an applied entry, a new voter set, a new leader),
so a lost frame or a leader that changed meanwhile costs only a retry.

What a leader appends is applied on every member and after every restart,
so every forwarded request is taken only from a connection whose sender is
a voter — holding the cluster secret is not membership: a removed node
still has it — and a proposal only when the application accepts its bytes
(`accept_proposal`); anything else is dropped and logged, and its sender's
retries with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from consensus.raft.core import RaftNode
from consensus.raft.errors import (
    ConfChangeInProgress,
    InvalidConfChange,
    MalformedMessage,
    NotLeader,
    ProposalDropped,
    TransferRefused,
)
from consensus.raft.membership import ConfChange, ConfChangeKind
from consensus.raft.transport import PeerTransport

log = logging.getLogger(__name__)

# The frame types a follower sends its leader.
FORWARDED = frozenset({"propose", "conf", "transfer"})


class Forwarder:
    """Hands leader-only requests to the core, or to the leader it names.

    Every method touches the core, so it runs on the loop that owns it.
    """

    def __init__(
        self,
        node_id: str,
        core: RaftNode,
        transport: PeerTransport,
        accept_proposal: Callable[[bytes], bool],
    ) -> None:
        self.node_id = node_id
        self.core = core
        self.transport = transport
        self.accept_proposal = accept_proposal

    def propose(self, data: bytes) -> None:
        try:
            self.core.propose(data)
        except NotLeader as exc:
            self._forward(exc, {"t": "propose", "d": data})
        except ProposalDropped:
            pass  # a transfer is under way; the proposer submits again

    def change_voters(self, change: ConfChange) -> None:
        try:
            self.core.propose_conf_change(change)
        except NotLeader as exc:
            self._forward(exc, {"t": "conf", "op": change.kind.value, "node": change.node_id})
        except (ConfChangeInProgress, InvalidConfChange, ProposalDropped) as exc:
            log.debug("membership change %s deferred: %s", change, exc)

    def transfer_leadership(self, to: str) -> None:
        try:
            self.core.transfer_leadership(to)
        except NotLeader as exc:
            self._forward(exc, {"t": "transfer", "to": to})
        except TransferRefused as exc:
            log.warning("leadership transfer to %s refused: %s", to, exc)

    def action_for(self, sender: str, frame: dict[str, Any]) -> Callable[[], None]:
        """What a forwarded frame from `sender` asks of this node, as an action for the loop."""
        kind = frame.get("t")
        if kind == "propose":
            data = frame.get("d")
            if not isinstance(data, bytes):
                raise MalformedMessage("a forwarded proposal carries bytes")
            return self._from_member(
                sender, "proposal", lambda: self._propose_checked(sender, data)
            )
        if kind == "conf":
            change = ConfChange(ConfChangeKind(frame["op"]), str(frame["node"]))
            return self._from_member(
                sender, "membership change", lambda: self.change_voters(change)
            )
        if kind == "transfer":
            to = str(frame["to"])
            return self._from_member(
                sender, "leadership transfer", lambda: self.transfer_leadership(to)
            )
        raise MalformedMessage(f"{kind!r} is not a forwarded request")

    def _from_member(
        self, sender: str, what: str, action: Callable[[], None]
    ) -> Callable[[], None]:
        def checked() -> None:
            # Checked on the loop, against the voters as they are when it is taken.
            if sender in self.core.voters:
                action()
            else:
                log.warning("%s from %s dropped: not a member", what, sender)

        return checked

    def _propose_checked(self, sender: str, data: bytes) -> None:
        if self.accept_proposal(data):
            self.propose(data)
        else:
            log.warning("proposal from %s dropped: not a valid command", sender)

    def _forward(self, refusal: NotLeader, frame: dict[str, Any]) -> None:
        leader = refusal.leader_id
        if leader is not None and leader != self.node_id:
            self.transport.send(leader, frame)
