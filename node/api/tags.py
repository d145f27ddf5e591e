"""`/v2/<name>/tags/list`: the tags of one repository, paged by name (`n`, `last`, `Link`)."""

from __future__ import annotations

from quart import Response, request

from node.api.errors import NameUnknown
from node.api.paging import fetch_page, page_response, parse_page
from node.services import NodeServices


async def list_tags(rt: NodeServices, name: str) -> Response:
    page = parse_page(request.args)
    if not await rt.engine.lookup(lambda q: q.repository_exists(name) or None):
        raise NameUnknown(detail={"name": name})
    queries = rt.engine.queries
    tags, headers = fetch_page(
        page,
        lambda last, limit: queries.tags(name, last=last, limit=limit),
        f"/v2/{name}/tags/list",
    )
    return page_response({"name": name, "tags": tags}, headers, "application/json")
