"""The order in which a `Ready` batch is handled, as a plan of steps.

`plan_ready` turns one `Ready` and the term already durable in the
write-ahead log into the steps a driver performs, in the order Raft needs
them: install a received snapshot, send the messages that may leave before
the save (a leader's appends and heartbeats of a term already on disk), save
the new entries and hard state (a Ready that only moves the commit index is
not saved), send the rest, apply the committed entries, deliver read states,
and react to a change of leader or role. The plan is a plain value and does
no I/O, so the trio driver (`driver.py`) and the deterministic simulator in
the tests execute the same order, each with its own disk and network.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.raft.core import ReadState, Ready, SoftState
from consensus.raft.messages import Message, MessageType
from consensus.raft.types import Entry, HardState, SnapshotMeta

# Messages a leader may send before its own save returns (see `plan_ready`).
_EARLY = frozenset({MessageType.APPEND, MessageType.HEARTBEAT})


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Replace the state by the received snapshot at `meta` and compact the log to it."""

    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class SendMessages:
    """Hand `messages` to the network; `before_save` when the save has not happened yet."""

    messages: tuple[Message, ...]
    before_save: bool = False


@dataclass(frozen=True, slots=True)
class SaveToLog:
    """Append `entries` and `hard_state` to the write-ahead log, one fsync for both.

    `behind_sends` says messages already left, so the save may as well run
    beside the transport that is sending them.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    behind_sends: bool = False


@dataclass(frozen=True, slots=True)
class ApplyCommitted:
    """Feed committed entries, in log order, to the state machine."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class DeliverReads:
    """Answer the ReadIndex requests these read states belong to."""

    read_states: tuple[ReadState, ...]


@dataclass(frozen=True, slots=True)
class ObserveRole:
    """The leader or this node's role changed: waiting requests try again."""

    soft_state: SoftState


Step = InstallSnapshot | SendMessages | SaveToLog | ApplyCommitted | DeliverReads | ObserveRole


def plan_ready(rd: Ready, durable_term: int) -> tuple[Step, ...]:
    """The steps that handle `rd`, in order; `durable_term` is the term on disk now."""
    steps: list[Step] = []
    if rd.snapshot is not None:
        steps.append(InstallSnapshot(rd.snapshot))
    messages = rd.messages
    # A Ready that only moves the commit index is not saved: Raft needs no commit
    # index on disk (a restarted node learns it again from the leader, and the
    # state machine skips what it applied already), and saving it would put one
    # more fsync on the path of every write; the next save carries it along.
    if rd.must_sync:
        # A leader's appends need not wait for its own fsync (Raft thesis §10.2.1):
        # they acknowledge nothing, and the acks they bring back are stepped into
        # the core only after this save returns, so an entry still counts as
        # committed only once it is durable here too. Only appends and heartbeats
        # of a term already on disk go early; every other message waits.
        early = tuple(m for m in messages if m.type in _EARLY and m.term == durable_term)
        if early:
            steps.append(SendMessages(early, before_save=True))
            messages = tuple(m for m in messages if m not in early)
        steps.append(SaveToLog(rd.hard_state, rd.entries, behind_sends=bool(early)))
    if messages:
        steps.append(SendMessages(messages))
    if rd.committed_entries:
        steps.append(ApplyCommitted(rd.committed_entries))
    if rd.read_states:
        steps.append(DeliverReads(rd.read_states))
    if rd.soft_state is not None:
        steps.append(ObserveRole(rd.soft_state))
    return tuple(steps)


__all__ = [
    "ApplyCommitted",
    "DeliverReads",
    "InstallSnapshot",
    "ObserveRole",
    "SaveToLog",
    "SendMessages",
    "Step",
    "plan_ready",
]
