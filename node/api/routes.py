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

from node.api import blobs, catalog, manifests, referrers, tags, uploads
from node.api.errors import NotFound, Unsupported
from node.api.grammar import parse_name
from node.services import NodeServices

Handler = Callable[..., Awaitable[Response]]

ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"_catalog"), {"GET": catalog.catalog}),
    (re.compile(r"(?P<name>.+)/blobs/uploads/?"), {"POST": uploads.start_upload}),
    (
        re.compile(r"(?P<name>.+)/blobs/uploads/(?P<session_id>[^/]+)"),
        {
            "GET": uploads.upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.finish_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    (
        re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
        {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob},
    ),
    (
        re.compile(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (re.compile(r"(?P<name>.+)/tags/list"), {"GET": tags.list_tags}),
    (re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"), {"GET": referrers.referrers}),
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


def resolve(method: str, path: str) -> tuple[Handler, dict[str, Any]]:
    """The handler and its arguments for `path` (the part after `/v2/`)."""
    for pattern, handlers in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        handler = handlers.get(method)
        if handler is None:
            raise Unsupported(
                f"method {method} not allowed here",
                headers={"Allow": ", ".join(sorted(handlers))},
            )
        params = match.groupdict()
        if "name" in params:
            parse_name(params["name"])
        return handler, params
    raise NotFound()


async def dispatch(rt: NodeServices, method: str, path: str) -> Response:
    handler, params = resolve(method, path)
    return await handler(rt, **params)
