"""`/v2/<name>/blobs/uploads/…`: start, append to, finish, inspect and cancel uploads.

Flows the spec names: a monolithic POST with `?digest=`, a cross-repository
mount (`?mount=&from=`), and a session fed by streamed or chunked PATCHes and
closed by a PUT with the digest of the whole blob. Each handler parses the
request, hands the work to the node's `BlobWriter` and writes the headers;
nothing is visible to any client until the digest checks out and every chunk
is durable on its holders.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import trio
from quart import Response, request

from node.api.access import PULL, may
from node.api.errors import DigestInvalid, RangeInvalid, SizeInvalid, UploadBusy
from node.api.grammar import parse_digest, parse_name, parse_upload_range
from node.api.quota_checks import body_length, refuse_over_quota
from node.cluster.blob_writer import Upload
from node.cluster.forward import forward_upload, session_node
from node.services import NodeServices


def _upload_headers(name: str, upload: Upload) -> dict[str, str]:
    end = max(upload.size - 1, 0)
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload.id}",
        "Docker-Upload-UUID": upload.id,
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


@contextmanager
def writing(name: str, upload: Upload) -> Iterator[None]:
    """Be the upload's one writer for this request, or UploadBusy at once.

    Refused rather than queued: a request waiting for the session would hold
    its connection, its slot and its buffered body, and when its turn came
    its offset would be stale anyway.
    """
    try:
        upload.lock.acquire_nowait()
    except trio.WouldBlock:
        raise UploadBusy(headers=_upload_headers(name, upload)) from None
    try:
        yield
    finally:
        upload.lock.release()


UploadHandler = Callable[[NodeServices, str, Upload], Awaitable[Response]]


def on_session_node(handler: UploadHandler) -> Callable[..., Awaitable[Response]]:
    """Run `handler` where the session lives: here, or relayed to the node its id names."""

    @functools.wraps(handler)
    async def run(rt: NodeServices, name: str, session_id: str) -> Response:
        if (owner := session_node(session_id)) != rt.config.node_id:
            return await forward_upload(rt.peers, owner, rt.counters)
        return await handler(rt, name, rt.blob_writer.find(name, session_id))

    return run


async def start_upload(rt: NodeServices, name: str) -> Response:
    writer = rt.blob_writer
    mount = request.args.get("mount")
    if mount is not None:
        digest = str(parse_digest(mount))
        source = request.args.get("from")
        if source is not None:
            parse_name(source)
            if not may(rt, source, PULL):
                source = None  # as if absent: mounting must not reveal what is stored there
        if await writer.mount(name, digest, source):
            return _blob_created(name, digest)
        # Not mountable: the spec says to fall back to a plain upload session.
    monolithic = request.args.get("digest")
    expected = parse_digest(monolithic) if monolithic is not None else None
    refuse_over_quota(rt, name, adding=body_length(),
                      digest=str(expected) if expected is not None else None)
    upload = await writer.open(name)
    with writing(name, upload):
        try:
            await writer.write(upload, request.body)
        except BaseException:
            writer.close(upload)
            raise
        if expected is not None:
            await writer.commit(upload, expected)
            return _blob_created(name, str(expected))
    return Response(b"", status=202, headers=_upload_headers(name, upload))


@on_session_node
async def patch_upload(rt: NodeServices, name: str, upload: Upload) -> Response:
    with writing(name, upload):
        content_range = request.headers.get("Content-Range")
        if content_range is not None:
            start, end = parse_upload_range(content_range)
            if start != upload.size:
                raise RangeInvalid(
                    "chunk does not start at the end of the upload",
                    detail={"expected_start": upload.size, "start": start},
                    headers=_upload_headers(name, upload),
                )
            declared = request.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) != end - start + 1:
                raise SizeInvalid(
                    "Content-Length does not match Content-Range",
                    detail={"Content-Length": declared, "Content-Range": content_range},
                )
        refuse_over_quota(rt, name, adding=upload.size + body_length())
        await rt.blob_writer.write(upload, request.body)
        return Response(b"", status=202, headers=_upload_headers(name, upload))


@on_session_node
async def finish_upload(rt: NodeServices, name: str, upload: Upload) -> Response:
    with writing(name, upload):
        digest = request.args.get("digest")
        if digest is None:
            raise DigestInvalid("the closing PUT needs ?digest=")
        expected = parse_digest(digest)
        refuse_over_quota(rt, name, adding=upload.size + body_length(), digest=str(expected))
        await rt.blob_writer.write(upload, request.body)
        await rt.blob_writer.commit(upload, expected)
        return _blob_created(name, str(expected))


@on_session_node
async def upload_status(rt: NodeServices, name: str, upload: Upload) -> Response:
    return Response(b"", status=204, headers=_upload_headers(name, upload))


@on_session_node
async def cancel_upload(rt: NodeServices, name: str, upload: Upload) -> Response:
    async with upload.lock:
        rt.blob_writer.close(upload)
    return Response(b"", status=204, headers={"Content-Length": "0"})
