"""Retention on a schedule: the leader proposes `ApplyRetention(now)` every
`retention_interval_seconds`, and what it deleted goes to the audit log.

Only the leader proposes, so a cluster applies the policies once per
interval, not once per node; the command carries the leader's clock, so
every node deletes the same tags and manifests. A node that loses or gains
leadership between two runs simply proposes at its own next tick: applying
twice in a row deletes nothing the second time. Deleted tags and manifests
leave blobs unreferenced, which garbage collection reclaims later.
"""

from __future__ import annotations

import logging

import trio

from consensus.engine import NoQuorum
from node.access.callers import PEER, Caller
from node.api.admin_policies import apply_retention_now
from node.services import NodeServices

log = logging.getLogger(__name__)


class RetentionSchedule:
    def __init__(self, rt: NodeServices) -> None:
        self.rt = rt
        self.interval = rt.config.retention_interval_seconds
        self.caller = Caller(PEER, rt.config.node_id, "")  # the node itself, on its schedule

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.interval <= 0:
            return  # scheduled retention is off
        while True:
            await trio.sleep(self.interval)
            engine = self.rt.engine
            if engine.leader() != self.rt.config.node_id:
                continue
            if not engine.queries.retention_policies():
                continue
            try:
                await apply_retention_now(self.rt, self.caller)
            except NoQuorum:
                log.warning("retention: no quorum, trying again in %ss", self.interval)
