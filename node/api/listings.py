"""Listings: `/v2/<name>/tags/list`, `/v2/_catalog` and `/v2/<name>/referrers/<digest>`."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request

from node.api.errors import NameUnknown
from node.api.grammar import parse_digest
from node.api.manifest_format import OCI_INDEX
from node.api.paging import fetch_page, parse_page
from node.runtime import NodeRuntime


def _json(doc: dict[str, Any], headers: dict[str, str], content_type: str) -> Response:
    return Response(
        json.dumps(doc), status=200, headers={**headers, "Content-Type": content_type}
    )


async def list_tags(rt: NodeRuntime, name: str) -> Response:
    page = parse_page(request.args)
    if not await rt.engine.lookup(lambda q: q.repository_exists(name) or None):
        raise NameUnknown(detail={"name": name})
    queries = rt.engine.queries
    tags, headers = fetch_page(
        page,
        lambda last, limit: queries.tags(name, last=last, limit=limit),
        f"/v2/{name}/tags/list",
    )
    return _json({"name": name, "tags": tags}, headers, "application/json")


async def catalog(rt: NodeRuntime) -> Response:
    page = parse_page(request.args)
    # A listing is never a miss: `lookup` takes a barrier only for linearizable reads.
    found = await rt.engine.lookup(
        lambda q: fetch_page(
            page, lambda last, limit: q.repositories(last=last, limit=limit), "/v2/_catalog"
        )
    )
    assert found is not None
    repos, headers = found
    return _json({"repositories": repos}, headers, "application/json")


async def referrers(rt: NodeRuntime, name: str, digest: str) -> Response:
    """Paged like the tags list (`n`, `last` by digest, a `Link` to the next page),
    so a subject with many signatures and SBOMs never makes one huge response."""
    subject = str(parse_digest(digest))
    page = parse_page(request.args)
    wanted = request.args.get("artifactType")
    listed = await rt.engine.lookup(
        lambda q: fetch_page(
            page,
            lambda last, limit: q.referrers(
                name, subject, artifact_type=wanted, last=last, limit=limit
            ),
            f"/v2/{name}/referrers/{subject}",
            key=lambda referrer: referrer.digest,
            keep={"artifactType": wanted} if wanted is not None else None,
        )
    )
    assert listed is not None
    found, headers = listed
    descriptors = []
    for referrer in found:
        descriptor: dict[str, Any] = {
            "mediaType": referrer.media_type,
            "digest": referrer.digest,
            "size": referrer.size,
        }
        if referrer.artifact_type:
            descriptor["artifactType"] = referrer.artifact_type
        if referrer.annotations:
            descriptor["annotations"] = referrer.annotations
        descriptors.append(descriptor)
    if wanted is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return _json(index, headers, OCI_INDEX)
