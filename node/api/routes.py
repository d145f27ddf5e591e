"""The URL table of the Distribution API, and the dispatcher that reads it.

Repository names contain slashes, so the path after `/v2/` is matched here
against one table, in order, instead of by the web framework's router. The
name is validated before any handler runs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response

from node.access.rules import DELETE, PULL, PUSH
from node.api import blobs, catalog, manifests, referrers, tags, uploads
from node.api.access import audit_change, caller_of_request, realm
from node.api.errors import NotFound, Unsupported
from node.api.grammar import parse_name
from node.services import NodeServices

Handler = Callable[..., Awaitable[Response]]

# Each route's handlers by method, with the action each needs on the repository (a
# catalog listing needs none: it shows only what the caller may pull).
ROUTES: list[tuple[re.Pattern[str], dict[str, tuple[Handler, str | None]]]] = [
    (re.compile(r"_catalog"), {"GET": (catalog.catalog, None)}),
    (re.compile(r"(?P<name>.+)/blobs/uploads/?"), {"POST": (uploads.start_upload, PUSH)}),
    (
        re.compile(r"(?P<name>.+)/blobs/uploads/(?P<session_id>[^/]+)"),
        {
            "GET": (uploads.upload_status, PUSH),
            "PATCH": (uploads.patch_upload, PUSH),
            "PUT": (uploads.finish_upload, PUSH),
            "DELETE": (uploads.cancel_upload, PUSH),
        },
    ),
    (
        re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
        {
            "GET": (blobs.get_blob, PULL),
            "HEAD": (blobs.get_blob, PULL),
            "DELETE": (blobs.delete_blob, DELETE),
        },
    ),
    (
        re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
        {
            "GET": (manifests.get_manifest, PULL),
            "HEAD": (manifests.get_manifest, PULL),
            "PUT": (manifests.put_manifest, PUSH),
            "DELETE": (manifests.delete_manifest, DELETE),
        },
    ),
    (re.compile(r"(?P<name>.+)/tags/list"), {"GET": (tags.list_tags, PULL)}),
    (
        re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"),
        {"GET": (referrers.referrers, PULL)},
    ),
]


# Each route as a template (`/v2/{name}/blobs/{digest}`): what metrics label a
# request with, so a label never holds a client's repository name or digest.
TEMPLATES = [
    (pattern, "/v2/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern).removesuffix("/?"))
    for pattern, _ in ROUTES
]


def route_template(path: str) -> str:
    """The template of the route `path` (the part after `/v2/`) matches, or
    `/v2/{unknown}` for none."""
    for pattern, template in TEMPLATES:
        if pattern.fullmatch(path):
            return template
    return "/v2/{unknown}"


def resolve(method: str, path: str) -> tuple[Handler, dict[str, Any], str | None]:
    """The handler, its arguments and the action it needs for `path` (after `/v2/`)."""
    for pattern, handlers in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        entry = handlers.get(method)
        if entry is None:
            raise Unsupported(
                f"method {method} not allowed here",
                headers={"Allow": ", ".join(sorted(handlers))},
            )
        params = match.groupdict()
        if "name" in params:
            parse_name(params["name"])
        return entry[0], params, entry[1]
    raise NotFound()


async def dispatch(rt: NodeServices, method: str, path: str) -> Response:
    """Resolve, authenticate, authorize, run the handler, audit what it changed.

    The caller is established before the route is resolved, so a request with
    bad credentials learns nothing about which paths exist."""
    who = await caller_of_request(rt)
    handler, params, action = resolve(method, path)
    name = params.get("name")
    if action is not None and name is not None:
        rt.gate.authorize(who, name, action, realm())
    previous = None
    if method == "PUT" and "reference" in params and not rt.gate.open:
        previous = rt.engine.queries.tag(name, params["reference"])
    response = await handler(rt, **params)
    if action is not None and not rt.gate.open:
        audit_change(rt, who, action, name, params, response, previous)
    return response
