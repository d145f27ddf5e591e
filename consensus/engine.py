"""The one interface `node` has to the replicated metadata.

`propose` changes state (answered only once the command is applied on this
node), `barrier` makes a following local read linearizable, `queries` reads
the local copy, and membership and status describe the group. `LocalEngine`
is the one-member implementation: it applies each command at once, in order.
Nothing in `node` may rely on there being one member.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from consensus.commands import Command
from consensus.state import Result, StateMachine
from consensus.store import Queries, connect


class NotSupported(Exception):
    """The engine cannot do this (e.g. membership changes without Raft)."""


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    http: str  # host:port clients and peers reach the node at


class Engine(Protocol):
    queries: Queries

    async def propose(self, command: Command) -> Result: ...

    async def barrier(self) -> None: ...

    def members(self) -> list[Member]: ...

    def leader(self) -> str | None: ...

    def status(self) -> dict[str, Any]: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine's background work, started in the node's root nursery."""
        ...

    def close(self) -> None: ...


class LocalEngine:
    """A one-member group: a proposal is committed the moment it is applied."""

    def __init__(self, state_dir: Path, *, node_id: str, http: str) -> None:
        path = state_dir / "state.sqlite"
        self._machine = StateMachine(connect(path))
        self.queries = Queries(connect(path, readonly=True))
        self._self = Member(node_id, http)
        self._writer = trio.CapacityLimiter(1)  # commands apply one at a time, in order
        self._next_index = self._machine.applied_index + 1

    async def propose(self, command: Command) -> Result:
        data = command.encode()
        async with self._writer:
            index = self._next_index
            result = await trio.to_thread.run_sync(self._machine.apply, index, data)
            self._next_index = index + 1
        return result

    async def barrier(self) -> None:
        # Every acknowledged write was applied here before it was acknowledged.
        return None

    def members(self) -> list[Member]:
        return [self._self]

    def leader(self) -> str | None:
        return self._self.node_id

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self._self.node_id,
            "leader": self._self.node_id,
            "members": [{"node_id": m.node_id, "http": m.http} for m in self.members()],
            "applied_index": self._machine.applied_index,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def close(self) -> None:
        self._machine.conn.close()
        self.queries.conn.close()
