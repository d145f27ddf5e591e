"""`/v2/<name>/blobs/uploads/…`: start, append to, finish, inspect and cancel uploads.

Flows the spec names: a monolithic POST with `?digest=`, a cross-repository
mount (`?mount=&from=`), and a session fed by streamed or chunked PATCHes and
closed by a PUT with the digest of the whole blob. Bytes go from the socket to
the spool in bounded batches through a worker thread; nothing is visible to
any client until the digest checks out and every chunk is durable.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from quart import Response, request

from consensus.engine import MountBlob, PutBlob, Refused
from node.api.errors import DigestInvalid, RangeInvalid, SizeInvalid
from node.api.grammar import parse_digest, parse_name, parse_upload_range
from node.cluster.forward import forward_upload, session_node
from node.runtime import NodeRuntime
from node.storage.spool import UploadSession

WRITE_BATCH = 1 << 20  # bytes gathered before one trip to a worker thread


def _upload_headers(name: str, session: UploadSession) -> dict[str, str]:
    end = max(session.size - 1, 0)
    return {
        "Location": f"/v2/{name}/blobs/uploads/{session.id}",
        "Docker-Upload-UUID": session.id,
        "Range": f"0-{end}",
        "Content-Length": "0",
    }


def _blob_created(name: str, digest: str) -> Response:
    return Response(
        b"",
        status=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


async def _receive_body(rt: NodeRuntime, session: UploadSession) -> int:
    """Append the request body to the session; returns how many bytes arrived.

    The pieces go to the worker thread as they came, not joined into one
    buffer: copying every byte twice more (and faulting in fresh pages for
    the copies) cost more than the extra calls.
    """
    if session.placement is None:
        session.placement = rt.transfers.placement()
        session.keep_local = session.placement.owns
    received = 0
    batch: list[bytes] = []
    batched = 0
    async for piece in request.body:
        batch.append(piece)
        batched += len(piece)
        received += len(piece)
        if batched >= WRITE_BATCH:
            await rt.on_disk(session.write_all, batch)
            batch, batched = [], 0
            _offer_complete_chunks(rt, session)
    if batch:
        await rt.on_disk(session.write_all, batch)
    _offer_complete_chunks(rt, session)
    return received


def _offer_complete_chunks(rt: NodeRuntime, session: UploadSession) -> None:
    """Start copying chunks that filled up to their holders while the upload goes on."""
    placement, nursery = session.placement, rt.transfers.nursery
    if nursery is None:
        return  # not running under serve(): `finish` copies every chunk itself
    closed = session.closed_chunks
    for cid, path in closed[placement.offered :]:
        placement.offer(cid, path, nursery)
    placement.offered = len(closed)


async def _finish(rt: NodeRuntime, name: str, session: UploadSession, digest_text: str) -> Response:
    """Verify, make durable, then record the blob: the order that keeps every promise."""
    digest = parse_digest(digest_text)
    try:
        blob = await rt.on_disk(session.finish, digest)
        chunk_ids = [cid for cid, _ in blob.chunks]
        placement = session.placement or rt.transfers.placement()
        await placement.finish(blob)
    finally:
        rt.spool.close(session)
    await rt.engine.propose(
        PutBlob(
            repo=name,
            digest=str(digest),
            size=blob.size,
            chunk_size=blob.chunk_size,
            chunks=chunk_ids,
        )
    )
    return _blob_created(name, str(digest))


SessionHandler = Callable[[NodeRuntime, str, UploadSession], Awaitable[Response]]


def on_session_node(handler: SessionHandler) -> Callable[..., Awaitable[Response]]:
    """Run `handler` where the session lives: here, or relayed to the node its id names."""

    @functools.wraps(handler)
    async def run(rt: NodeRuntime, name: str, session_id: str) -> Response:
        if (owner := session_node(session_id)) != rt.config.node_id:
            return await forward_upload(rt.peers, owner, rt.counters)
        return await handler(rt, name, rt.spool.get(name, session_id))

    return run


async def start_upload(rt: NodeRuntime, name: str) -> Response:
    args = request.args
    mount, source = args.get("mount"), args.get("from")
    if mount is not None:
        digest = str(parse_digest(mount))
        if source is not None and source != name:
            parse_name(source)
            # It may have been pushed through another node: lookup confirms a miss.
            if await rt.engine.lookup(lambda q: q.repo_blob(source, digest)) is not None:
                try:
                    await rt.engine.propose(MountBlob(repo=name, digest=digest))
                    return _blob_created(name, digest)
                except Refused:
                    pass  # deleted meanwhile
        elif rt.engine.queries.repo_blob(name, digest) is not None:
            return _blob_created(name, digest)
        # Not mountable: the spec says to fall back to a plain upload session.
    monolithic = args.get("digest")
    if monolithic is not None:
        parse_digest(monolithic)
    session = rt.spool.open(name)
    async with session.lock:
        try:
            await _receive_body(rt, session)
        except BaseException:
            rt.spool.close(session)
            raise
        if monolithic is not None:
            return await _finish(rt, name, session, monolithic)
    return Response(b"", status=202, headers=_upload_headers(name, session))


@on_session_node
async def patch_upload(rt: NodeRuntime, name: str, session: UploadSession) -> Response:
    async with session.lock:
        content_range = request.headers.get("Content-Range")
        if content_range is not None:
            start, end = parse_upload_range(content_range)
            if start != session.size:
                raise RangeInvalid(
                    "chunk does not start at the end of the upload",
                    detail={"expected_start": session.size, "start": start},
                    headers=_upload_headers(name, session),
                )
            declared = request.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) != end - start + 1:
                raise SizeInvalid(
                    "Content-Length does not match Content-Range",
                    detail={"Content-Length": declared, "Content-Range": content_range},
                )
        await _receive_body(rt, session)
        return Response(b"", status=202, headers=_upload_headers(name, session))


@on_session_node
async def finish_upload(rt: NodeRuntime, name: str, session: UploadSession) -> Response:
    async with session.lock:
        digest = request.args.get("digest")
        if digest is None:
            raise DigestInvalid("the closing PUT needs ?digest=")
        parse_digest(digest)
        await _receive_body(rt, session)
        return await _finish(rt, name, session, digest)


@on_session_node
async def upload_status(rt: NodeRuntime, name: str, session: UploadSession) -> Response:
    return Response(b"", status=204, headers=_upload_headers(name, session))


@on_session_node
async def cancel_upload(rt: NodeRuntime, name: str, session: UploadSession) -> Response:
    async with session.lock:
        rt.spool.close(session)
    return Response(b"", status=204, headers={"Content-Length": "0"})
