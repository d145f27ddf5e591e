"""Finishing a drain: a draining node that holds nothing any more leaves the group.

Draining is a flag in the replicated member list (`DrainMember`). Placement
gives a draining member no chunk, so the other nodes' repair loops fetch its
chunks and its own repair loop deletes its copies once their new owners
confirm theirs; the node keeps serving meanwhile. This task, on every node,
watches its own node: once the node is draining and a repair pass that
started after the drain was seen here has finished complete, with nothing
owned missing and no copy held unowned, the node is empty and asks for its
removal. A removed node's own proposals are no longer taken by the group, so
the removal is made by another voter: leadership is handed to another voter
first if this node leads, then the leader is asked over the signed peer API
(`DELETE /_cluster/members/<id>`) to remove this node and forget its
registration (which takes the draining flag with it).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from consensus.engine import Engine, MembershipRefused, NoQuorum
from node.cluster.errors import PeerError
from node.cluster.peers import Peers

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # between looks at the draining flag and the repair status
RETRY_SECONDS = 3.0  # after a removal request that did not go through
REMOVE_TIMEOUT = 30.0  # one removal request: a conf change and a commit at the leader


class DrainState(enum.Enum):
    SERVING = "serving"  # not draining
    DRAINING = "draining"  # flag committed; repair is moving the chunks away
    REMOVING = "removing"  # empty; asking the group to remove this node
    REMOVED = "removed"  # no longer a member


def pass_shows_empty(repair: dict[str, Any], drain_seen: float) -> bool:
    """Whether the repair status shows a finished, complete pass that started after
    `drain_seen` (unix time) and left nothing owned missing and nothing unowned held.

    A pass under way still shows its predecessor's outcome, so a pass counts only
    once it finished after it started.
    """
    started = repair.get("last_pass_started")
    finished = repair.get("last_pass_finished")
    return (
        isinstance(started, (int, float))
        and isinstance(finished, (int, float))
        and started > drain_seen
        and finished >= started
        and repair.get("state") == "idle"
        and repair.get("last_pass_complete") is True
        and repair.get("owned_missing_chunks") == 0
        and repair.get("unowned_held_chunks") == 0
    )


@dataclass
class DrainFinisher:
    """Watches this node's draining flag and removes the node once it is empty."""

    node_id: str
    engine: Engine
    peers: Peers
    repair_status: Callable[[], dict[str, Any]]  # the repair loop's status, as a dict
    state: DrainState = DrainState.SERVING
    _drain_seen: float | None = None  # unix time the flag was first seen here

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.step()
            await trio.sleep(RETRY_SECONDS if self.state is DrainState.REMOVING else POLL_SECONDS)

    async def step(self) -> None:
        """One look: follow the flag, and ask for removal once the node is empty."""
        if self.state is DrainState.REMOVED:
            return  # a node that comes back joins anew, as a new process
        member = self.node_id in {m.node_id for m in self.engine.members()}
        draining = member and self.node_id in self.engine.draining()
        if self.state is DrainState.SERVING:
            if not draining:
                return
            self._drain_seen = time.time()
            self.state = DrainState.DRAINING
            log.info("drain of %s started: its chunks move to their new owners", self.node_id)
        if not draining:
            if member:
                log.info("drain of %s cancelled", self.node_id)
                self.state, self._drain_seen = DrainState.SERVING, None
            else:
                self.state = DrainState.REMOVED
                log.info("drain of %s finished: removed from the group", self.node_id)
            return
        if self.state is DrainState.DRAINING:
            assert self._drain_seen is not None
            if not pass_shows_empty(self.repair_status(), self._drain_seen):
                return
            log.info("drain of %s: the node is empty (every chunk it held has its owners); "
                     "leaving the group", self.node_id)
            self.state = DrainState.REMOVING
        if await self.request_removal():
            self.state = DrainState.REMOVED
            log.info("drain of %s finished: removed from the group", self.node_id)

    async def request_removal(self) -> bool:
        """Hand leadership away if this node has it, then ask the leader to remove
        this node; True once the leader says it did."""
        me = self.node_id
        if self.engine.leader() == me:
            others = [v for v in self.engine.voters() if v != me]
            staying = [v for v in others if v not in self.engine.draining()] or others
            if not staying:
                log.warning("drain of %s: no other voter to hand leadership to", me)
                return False
            target = next((v for v in staying if self.peers.is_up(v)), staying[0])
            try:
                await self.engine.transfer_leader(target)
            except (MembershipRefused, NoQuorum) as exc:
                log.warning("drain of %s: leadership did not move to %s: %s", me, target, exc)
                return False
        leader = self.engine.leader()
        if leader is None or leader == me:
            return False
        try:
            response = await self.peers.request(
                leader, "DELETE", f"/_cluster/members/{me}", timeout=REMOVE_TIMEOUT
            )
        except PeerError as exc:
            log.warning("drain of %s: removal request to %s failed: %s", me, leader, exc)
            return False
        if response.status_code == 200:
            return True
        if response.status_code == 404:  # not a voter there: an earlier request did it
            return True
        log.warning("drain of %s: %s answered the removal request with %d: %s",
                    me, leader, response.status_code, response.text[:200])
        return False
