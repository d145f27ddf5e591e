"""`/v2/_catalog`: every repository the cluster holds, paged by name (`n`, `last`, `Link`)."""

from __future__ import annotations

from quart import Response, request

from node.api.paging import fetch_page, page_response, parse_page
from node.services import NodeServices


async def catalog(rt: NodeServices) -> Response:
    page = parse_page(request.args)
    # A listing is never a miss: `lookup` takes a barrier only for linearizable reads.
    found = await rt.engine.lookup(
        lambda q: fetch_page(
            page, lambda last, limit: q.repositories(last=last, limit=limit), "/v2/_catalog"
        )
    )
    assert found is not None
    repos, headers = found
    return page_response({"repositories": repos}, headers, "application/json")
