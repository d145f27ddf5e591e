"""Refusing a push that cannot fit its namespace's quota before its bytes arrive.

The state machine is what enforces a quota (consensus/quotas.py), when the blob
or manifest is committed; these checks read this node's copy of the usage, so a
client whose namespace is full learns it at the first request rather than after
sending gigabytes. They only refuse what the commit would refuse too: a blob the
namespace already counts is free, and a body of unknown size passes unless the
namespace has no room left at all.
"""

from __future__ import annotations

from quart import request

from consensus.engine import quota_refusal
from node.api.errors import QuotaExceeded
from node.services import NodeServices


def body_length() -> int:
    """The request body's declared length (0 when absent or not a number)."""
    declared = request.headers.get("Content-Length", "")
    return int(declared) if declared.isdigit() else 0


def refuse_over_quota(rt: NodeServices, repo: str, *, adding: int,
                      digest: str | None = None) -> None:
    """QuotaExceeded when `adding` more bytes (of the blob `digest`, when known) into
    `repo` would pass a quota covering it, or when it has no room left at all."""
    queries = rt.engine.queries
    quotas = queries.quotas_covering(repo)
    if not quotas:
        return
    new_repo = 1 if not queries.repository_exists(repo) else 0
    for q in quotas:
        free = digest is not None and queries.quota_counts(q.pattern, digest)
        full = digest is None and q.max_bytes is not None and q.used_bytes >= q.max_bytes
        refusal = quota_refusal(q, 0 if free else max(adding, 1 if full else 0), new_repo)
        if refusal:
            raise QuotaExceeded(refusal)
