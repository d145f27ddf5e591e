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

import json
import logging
import time
from typing import Any

import trio

from consensus.engine import ApplyRetention, Engine, NoQuorum
from node.access.audit import AuditLog
from node.access.callers import PEER, Caller
from node.config import Config

log = logging.getLogger(__name__)


class RetentionSchedule:
    def __init__(self, config: Config, engine: Engine, audit: AuditLog) -> None:
        self.config, self.engine, self.audit = config, engine, audit
        self.interval = config.retention_interval_seconds
        self.caller = Caller(PEER, config.node_id, "")  # the node itself, on its schedule

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.interval <= 0:
            return  # scheduled retention is off
        while True:
            await trio.sleep(self.interval)
            engine = self.engine
            if engine.leader() != self.config.node_id:
                continue
            if not engine.queries.retention_policies():
                continue
            try:
                await apply_retention_now(engine, self.audit, self.caller)
            except NoQuorum:
                log.warning("retention: no quorum, trying again in %ss", self.interval)


async def apply_retention_now(engine: Engine, audit: AuditLog, caller: Caller) -> dict[str, Any]:
    """Propose ApplyRetention with this node's clock; what it deleted, also written to
    the audit log (one line per tag or manifest, and one for the run)."""
    command = ApplyRetention(now=int(time.time()))
    await engine.propose(command)
    detail = engine.queries.command_result(command.id)
    deleted = json.loads(detail) if detail else {"tags": [], "manifests": []}
    for repo, tag, digest in deleted["tags"]:
        audit.record("retention_tag_deleted", caller, repository=repo, tag=tag, digest=digest)
    for repo, digest in deleted["manifests"]:
        audit.record("retention_manifest_deleted", caller, repository=repo, digest=digest)
    audit.record("retention_applied", caller, now=command.now,
                 tags=len(deleted["tags"]), manifests=len(deleted["manifests"]))
    return {
        "now": command.now,
        "tags": [{"repository": r, "tag": t, "digest": d} for r, t, d in deleted["tags"]],
        "manifests": [{"repository": r, "digest": d} for r, d in deleted["manifests"]],
    }
