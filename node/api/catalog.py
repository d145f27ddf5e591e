"""`/v2/_catalog`: the repositories the caller may pull, paged by name (`n`, `last`, `Link`).

With access control on, repositories the caller may not pull are skipped as
if they did not exist; pages are filled from further rows, so `n` and `Link`
mean what they say."""

from __future__ import annotations

from typing import Any

from quart import Response, request

from node.api.access import caller, realm
from node.api.paging import fetch_page, page_response, parse_page
from node.services import NodeServices

SCAN_BATCH = 500


def _visible(rt: NodeServices, queries: Any, last: str | None, limit: int) -> list[str]:
    """Up to `limit` repositories after `last` that the caller may pull."""
    if rt.gate.open:
        return queries.repositories(last=last, limit=limit)
    who = caller()  # by its grants now, whatever scopes its token named
    found: list[str] = []
    while len(found) < limit:
        batch = queries.repositories(last=last, limit=SCAN_BATCH)
        found.extend(repo for repo in batch if rt.gate.may_list(who, repo))
        if len(batch) < SCAN_BATCH:
            break
        last = batch[-1]
    return found[:limit]


async def catalog(rt: NodeServices) -> Response:
    rt.gate.authorize_catalog(caller(), realm())
    page = parse_page(request.args)
    # A listing is never a miss: `lookup` takes a barrier only for linearizable reads.
    found = await rt.engine.lookup(
        lambda q: fetch_page(
            page, lambda last, limit: _visible(rt, q, last, limit), "/v2/_catalog"
        )
    )
    assert found is not None
    repos, headers = found
    return page_response({"repositories": repos}, headers, "application/json")
