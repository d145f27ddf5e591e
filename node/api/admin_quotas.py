"""`/admin/quotas`: caps on the bytes and repositories of a namespace, for admins.

A quota lives in the replicated state and the state machine enforces it when a
push is applied (consensus/quotas.py), so it holds on every node at once. This
module only reads and changes the quotas; the admin check and the body parsing
are node/api/admin.py's.

    GET    /admin/quotas                          every quota, its limits and usage
    POST   /admin/quotas  {pattern, max_bytes, max_repos}   make or change one
    DELETE /admin/quotas?pattern=
"""

from __future__ import annotations

from typing import Any

from quart import Response, request

from consensus.engine import Quota, RemoveQuota, SetQuota
from node.access.callers import Caller
from node.access.errors import AdminInputInvalid
from node.access.rules import parse_pattern
from node.api.admin_requests import json_response
from node.api.errors import Unsupported
from node.services import NodeServices

MAX_LIMIT = 2**63 - 1  # what a command and an SQLite integer hold


def _limit(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_LIMIT:
        raise AdminInputInvalid(f"{key}: a whole number from 0, or null for no cap")
    return value


def quota_view(q: Quota) -> dict[str, Any]:
    return {"pattern": q.pattern, "max_bytes": q.max_bytes, "max_repos": q.max_repos,
            "used_bytes": q.used_bytes, "used_repos": q.used_repos}


async def quota_admin(rt: NodeServices, who: Caller, parts: list[str],
                      body: dict[str, Any]) -> Response:
    method = request.method
    if parts != ["quotas"]:
        raise Unsupported("quotas are read and changed at /admin/quotas")
    if method == "GET":
        await rt.engine.barrier()  # usage as committed, not as this node last applied it
        return json_response({"quotas": [quota_view(q) for q in rt.engine.queries.quotas()]})
    if method == "POST":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise AdminInputInvalid("pattern: a namespace or a glob over repository names")
        pattern = parse_pattern(pattern)
        max_bytes, max_repos = _limit(body, "max_bytes"), _limit(body, "max_repos")
        if max_bytes is None and max_repos is None:
            raise AdminInputInvalid("a quota caps max_bytes, max_repos or both")
        await rt.engine.propose(SetQuota(pattern=pattern, max_bytes=max_bytes,
                                         max_repos=max_repos))
        rt.gate.audit.record("quota_set", who, pattern=pattern, max_bytes=max_bytes,
                             max_repos=max_repos)
        (quota,) = [q for q in rt.engine.queries.quotas() if q.pattern == pattern]
        return json_response(quota_view(quota), 201)
    if method == "DELETE":
        pattern = parse_pattern(request.args.get("pattern", ""))
        await rt.engine.propose(RemoveQuota(pattern=pattern))
        rt.gate.audit.record("quota_removed", who, pattern=pattern)
        return json_response({"removed": pattern})
    raise Unsupported(f"method {method} not allowed here")
