"""`/v2/<name>/blobs/<digest>`: read (whole or one range), check, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Response, request

from consensus.engine import Recipe, UnlinkBlob
from node.api.errors import BlobUnknown
from node.api.grammar import ByteRange, parse_digest, parse_range
from node.cluster.transfer import chunk_pieces
from node.runtime import NodeRuntime
from node.storage.chunker import chunk_spans


async def find_blob(rt: NodeRuntime, name: str, digest: str) -> Recipe:
    """The blob `name` may serve; a miss is confirmed after a read barrier."""
    recipe = await rt.engine.lookup(lambda q: q.repo_blob(name, digest))
    if recipe is None:
        raise BlobUnknown(detail={"digest": digest})
    return recipe


async def stream_blob(
    rt: NodeRuntime, recipe: Recipe, span: ByteRange | None
) -> AsyncIterator[bytes]:
    """The bytes of `span` (or the whole blob), touching only the chunks it covers.

    The first chunk is obtained before the response starts, so a chunk no
    holder can provide still gets a proper error status; the rest stream with
    a window of chunks fetched ahead.
    """
    first, last = (span.first, span.last) if span else (0, recipe.size - 1)
    spans = chunk_spans(recipe.size, recipe.chunk_size, first, last)
    head = await rt.transfers.get(recipe.chunks[spans[0][0]]) if spans else None

    async def body() -> AsyncIterator[bytes]:
        if not spans:
            return
        window = rt.config.fetch_window
        async with chunk_pieces(rt.transfers, recipe, spans, window, head) as pieces:
            async for piece in pieces:
                yield piece

    return body()


async def get_blob(rt: NodeRuntime, name: str, digest: str) -> Response:
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
        response = Response(await stream_blob(rt, recipe, span), status=status, headers=headers)
    response.headers["Content-Length"] = str(length)
    return response


async def delete_blob(rt: NodeRuntime, name: str, digest: str) -> Response:
    parsed = str(parse_digest(digest))
    await rt.engine.propose(UnlinkBlob(repo=name, digest=parsed))
    return Response(b"", status=202, headers={"Docker-Content-Digest": parsed})
