"""`/v2/<name>/blobs/<digest>`: read (whole or one range), check, delete.

The bytes come from the node's `BlobReader`, which has the first chunk in
hand before the response starts, so a chunk no holder can provide is an
error status here rather than a body cut short.
"""

from __future__ import annotations

from quart import Response, request

from consensus.engine import Recipe, UnlinkBlob
from node.api.errors import BlobUnknown
from node.api.grammar import parse_digest, parse_range
from node.services import NodeServices


async def find_blob(rt: NodeServices, name: str, digest: str) -> Recipe:
    """The blob `name` may serve; a miss is confirmed after a read barrier."""
    recipe = await rt.engine.lookup(lambda q: q.repo_blob(name, digest))
    if recipe is None:
        raise BlobUnknown(detail={"digest": digest})
    return recipe


async def get_blob(rt: NodeServices, name: str, digest: str) -> Response:
    parsed = str(parse_digest(digest))
    recipe = await find_blob(rt, name, parsed)
    headers = {
        "Docker-Content-Digest": parsed,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "ETag": f'"{parsed}"',
        "Cache-Control": "max-age=31536000",
    }
    span = parse_range(request.headers.get("Range"), recipe.size)
    status = 200
    length = recipe.size
    if span is not None:
        status = 206
        length = span.length
        headers["Content-Range"] = span.content_range()
    if request.method == "HEAD":
        response = Response(b"", status=status, headers=headers)
    else:
        first, last = (span.first, span.last) if span else (0, None)
        body = await rt.blob_reader.body(recipe, first, last)
        response = Response(body, status=status, headers=headers)
    response.headers["Content-Length"] = str(length)
    return response


async def delete_blob(rt: NodeServices, name: str, digest: str) -> Response:
    parsed = str(parse_digest(digest))
    await rt.engine.propose(UnlinkBlob(repo=name, digest=parsed))
    return Response(b"", status=202, headers={"Docker-Content-Digest": parsed})
