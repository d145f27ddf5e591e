"""Typed errors the Raft core raises to its caller.

Each says what the caller asked for that the core cannot do right now, so the
driver can map it to a retry, a redirect or an operator error without
parsing messages.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error the Raft core raises."""


class NotLeader(RaftError):
    """The request needs the leader; `leader_id` is who this node believes
    leads (None when it does not know), so the caller can redirect."""

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class ProposalDropped(RaftError):
    """The leader refuses proposals while it hands leadership to another node."""


class ConfChangeInProgress(RaftError):
    """Another membership change is not committed yet (or the new leader has
    not committed an entry of its term), so a second one would be unsafe."""


class InvalidConfChange(RaftError):
    """The change would add an existing voter, remove a non-voter or empty the
    cluster."""


class TransferRefused(RaftError):
    """Leadership cannot go to the named node (it is not a voter)."""


class InvalidCompaction(RaftError):
    """The application asked to compact at an index not yet applied or already
    compacted."""


class InconsistentStorage(RaftError):
    """The persisted state handed to the core contradicts itself (holes in the
    log, a commit index beyond the last entry)."""


class ReadyPending(RaftError):
    """ready() was called again before advance() acknowledged the last batch."""


class StorageFull(RaftError):
    """The disk had no room for a write the log or the state machine must make.

    Nothing of it was kept (the partial write was cut off, the transaction
    rolled back), so the same work can be done again once there is room: the
    driver waits and retries instead of stopping the node.
    """


class MalformedMessage(RaftError):
    """A peer sent a wire message that does not decode into a Message."""
