"""`/v2/<name>/referrers/<digest>`: the manifests whose `subject` is a digest, as an OCI index.

Paged like the tags list (`n`, `last` by digest, a `Link` to the next page),
so a subject with many signatures and SBOMs never makes one huge response;
`?artifactType=` filters, and says so in `OCI-Filters-Applied`.
"""

from __future__ import annotations

from typing import Any

from quart import Response, request

from node.api.grammar import parse_digest
from node.api.manifest_format import OCI_INDEX
from node.api.paging import fetch_page, page_response, parse_page
from node.services import NodeServices


async def referrers(rt: NodeServices, name: str, digest: str) -> Response:
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
    return page_response(index, headers, OCI_INDEX)
