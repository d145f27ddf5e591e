"""The one interface `node` has to the replicated metadata.

`propose` changes state (answered only once the command is committed and
applied on this node, or refused the same way on every node), `lookup` reads
the local copy and confirms a miss with a read barrier, `queries` reads the
local copy as it is, and membership and status describe the group. Every
cluster size, one node included, is a Raft group: `open_engine` builds the
Raft member that implements this interface.

`node` imports from `consensus` only through this module: the commands, the
record types the queries return and the errors are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import trio

from consensus.commands import (
    Command,
    DeleteManifest,
    DeleteTag,
    MountBlob,
    PutBlob,
    PutManifest,
    RegisterMember,
    UnlinkBlob,
    UnregisterMember,
)
from consensus.raft.driver import (
    MembershipRefused,
    NoQuorum,
    RaftEngine,
    RaftSettings,
    Refused,
    StatePaths,
)
from consensus.state import Refusal
from consensus.store import ManifestRecord, Member, Queries, Recipe, Referrer

__all__ = [
    "Command",
    "DeleteManifest",
    "DeleteTag",
    "Engine",
    "ManifestRecord",
    "Member",
    "MembershipRefused",
    "MountBlob",
    "NoQuorum",
    "PutBlob",
    "PutManifest",
    "Queries",
    "RaftSettings",
    "Recipe",
    "Referrer",
    "Refusal",
    "Refused",
    "RegisterMember",
    "StatePaths",
    "UnlinkBlob",
    "UnregisterMember",
    "open_engine",
]

T = TypeVar("T")


class Engine(Protocol):
    queries: Queries
    http_advertise: str | None  # set by the node once its HTTP port is bound
    raft_advertise: str | None  # known once the Raft transport listens

    async def propose(self, command: Command) -> None:
        """Commit and apply `command`; Refused or NoQuorum when that cannot be."""
        ...

    async def barrier(self) -> None: ...

    async def lookup(self, query: Callable[[Queries], T | None]) -> T | None:
        """`query` on the local state, with a miss confirmed after a read barrier."""
        ...

    def blob_chunk_lists(self) -> Iterator[tuple[str, ...]]:
        """Every recorded blob's chunk ids (blocking: call from a worker thread)."""
        ...

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


def open_engine(paths: StatePaths, settings: RaftSettings) -> Engine:
    """Open (or create) this node's Raft member over its state files."""
    return RaftEngine(paths, settings)
