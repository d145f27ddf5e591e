"""The one interface `node` has to the replicated metadata.

`propose` changes state (answered only once the command is committed and
applied on this node), `barrier` makes a following local read linearizable,
`queries` reads the local copy, and membership and status describe the group.
Every cluster size, one node included, is a Raft group: `open_engine` builds
the Raft member that implements this interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import trio

from consensus.commands import Command, RegisterMember
from consensus.raft.driver import MembershipRefused, NoQuorum, RaftEngine, RaftSettings
from consensus.state import Result
from consensus.store import Queries

__all__ = [
    "Engine",
    "MembershipRefused",
    "NoQuorum",
    "RaftSettings",
    "open_engine",
]


class Engine(Protocol):
    queries: Queries
    http_advertise: str | None  # set by the node once its HTTP port is bound
    raft_advertise: str | None  # known once the Raft transport listens

    async def propose(self, command: Command) -> Result: ...

    async def barrier(self) -> None: ...

    def members(self) -> list[RegisterMember]: ...

    def leader(self) -> str | None: ...

    def voters(self) -> tuple[str, ...]: ...

    def status(self) -> dict[str, Any]: ...

    async def add_member(self, node_id: str, raft: str, http: str, zone: str = ...) -> None: ...

    async def remove_member(self, node_id: str) -> None: ...

    async def transfer_leader(self, to: str) -> None: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine's background work, started in the node's root nursery."""
        ...

    def close(self) -> None: ...


def open_engine(state_dir: Path, settings: RaftSettings) -> Engine:
    """Open (or create) this node's Raft member over its state directory."""
    return RaftEngine(state_dir, settings)
