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
    await rt.fresh_reads()
    queries = rt.engine.queries
    if not queries.repository_exists(name):
        await rt.engine.barrier()
        if not queries.repository_exists(name):
            raise NameUnknown(detail={"name": name})
    tags, headers = fetch_page(
        page,
        lambda last, limit: queries.tags(name, last=last, limit=limit),
        f"/v2/{name}/tags/list",
    )
    return _json({"name": name, "tags": tags}, headers, "application/json")


async def catalog(rt: NodeRuntime) -> Response:
    page = parse_page(request.args)
    await rt.fresh_reads()
    queries = rt.engine.queries
    repos, headers = fetch_page(
        page,
        lambda last, limit: queries.repositories(last=last, limit=limit),
        "/v2/_catalog",
    )
    return _json({"repositories": repos}, headers, "application/json")


async def referrers(rt: NodeRuntime, name: str, digest: str) -> Response:
    subject = str(parse_digest(digest))
    await rt.fresh_reads()
    wanted = request.args.get("artifactType")
    descriptors = []
    for record in rt.engine.queries.referrers(name, subject):
        if wanted is not None and record.artifact_type != wanted:
            continue
        descriptor: dict[str, Any] = {
            "mediaType": record.media_type,
            "digest": record.digest,
            "size": len(record.body),
        }
        if record.artifact_type:
            descriptor["artifactType"] = record.artifact_type
        if record.annotations:
            descriptor["annotations"] = record.annotations
        descriptors.append(descriptor)
    headers = {"OCI-Filters-Applied": "artifactType"} if wanted is not None else {}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return _json(index, headers, OCI_INDEX)
