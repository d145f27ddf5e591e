"""`/admin/gc/…`: run a garbage collection by hand, or look at the last ones, for admins.

A run is one `CollectGarbage` command through Raft (node/cluster/gc.py holds
the protocol); the answer says what it removed from the state, and every node
then sweeps its chunks, which `GET /admin/gc/status` follows node by node (the
CLI draws its progress bar from it). A dry run changes nothing: the same
selection, read-only, with the chunks and bytes each node would free. Every
run is written to the audit log.

    POST /admin/gc/run      {grace_seconds: int ≥ 0 (default gc_grace), dry_run: bool}
    GET  /admin/gc/status   the last runs, and each node's sweep
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import trio
from quart import Response, request

from node.access.callers import Caller
from node.access.errors import AdminInputInvalid
from node.api.admin_requests import json_response
from node.api.errors import NotFound, Unsupported
from node.cluster.errors import PeerError
from node.services import NodeServices

MAX_GRACE_SECONDS = 10 * 365 * 86400
STATUS_TIMEOUT = 5.0  # seconds a member has to tell its sweep's progress


def _grace(rt: NodeServices, body: dict[str, Any]) -> int:
    grace = body.get("grace_seconds")
    if grace is None:
        return int(rt.config.gc_grace)
    if type(grace) is not int or not 0 <= grace <= MAX_GRACE_SECONDS:
        raise AdminInputInvalid(f"grace_seconds: whole seconds from 0 to {MAX_GRACE_SECONDS}")
    return grace


async def gc_admin(rt: NodeServices, who: Caller, parts: list[str],
                   body: dict[str, Any]) -> Response:
    method = request.method
    if parts == ["gc", "run"] and method == "POST":
        grace = _grace(rt, body)
        dry_run = body.get("dry_run")
        if dry_run not in (None, True, False):
            raise AdminInputInvalid("dry_run: true or false")
        if dry_run:
            return json_response(await rt.gc.dry_run(grace, rt.peers.placed()))
        detail = await rt.gc.collect(grace)
        rt.gate.audit.record("gc_collected", who, **detail)
        return json_response(detail)
    if parts == ["gc", "status"] and method == "GET":
        return json_response(await _status(rt))
    if parts[:2] in (["gc", "run"], ["gc", "status"]):
        raise Unsupported(f"method {method} not allowed here")
    raise NotFound()


async def _status(rt: NodeServices) -> dict[str, Any]:
    """The last runs the replicated state records, and every member's sweep."""
    runs = [asdict(run) for run in rt.engine.queries.gc_runs(10)]
    nodes: dict[str, Any] = {rt.config.node_id: rt.gc.status.as_dict()}

    async def ask(node_id: str) -> None:
        try:
            answer = await rt.peers.request(node_id, "GET", "/_cluster/status",
                                            timeout=STATUS_TIMEOUT)
            nodes[node_id] = answer.json().get("gc") if answer.status_code == 200 else None
        except (PeerError, ValueError):
            nodes[node_id] = None  # unreachable: its sweep runs when it is back

    async with trio.open_nursery() as nursery:
        for member in rt.engine.members():
            if member.node_id != rt.config.node_id:
                nursery.start_soon(ask, member.node_id)
    return {"epoch": rt.engine.queries.gc_epoch(), "runs": runs,
            "nodes": dict(sorted(nodes.items()))}
