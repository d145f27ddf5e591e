"""`/_cluster/…`: the internal API on the client port, open only to holders of the secret.

Chunk transfer between peers (GET, HEAD, PUT of one chunk), health, status,
membership changes and leadership transfer. Every request must be signed
(`node.cluster.auth`); one that is not gets 401 and its body is never read.
A chunk PUT is signed over the chunk's id, and its bytes must hash to it
before the chunk becomes visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

import httpx
import trio
from quart import Response, request

from consensus.engine import MembershipRefused
from node.cluster.client import call
from node.cluster.errors import (
    MembershipConflict,
    PeerAuthFailed,
    PeerEndpointUnknown,
    PeerMethodUnsupported,
    PeerRequestInvalid,
    UnknownMember,
)
from node.config import NODE_ID_RE
from node.runtime import NodeRuntime
from node.storage.errors import ChunkCorrupt, ChunkMissing

log = logging.getLogger(__name__)
MAX_ADMIN_BODY = 64 * 1024
MAX_CHUNK_BODY = 256 << 20


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def _authenticate(rt: NodeRuntime) -> str:
    """Check the request's proof of the secret; returns the body digest it signed."""
    target = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    try:
        return rt.peer_auth.verify(request.method, target, request.headers)
    except PeerAuthFailed as exc:
        log.warning("refused %s %s: %s", request.method, request.path, exc)
        raise PeerAuthFailed("cluster secret required") from None


async def _read_body(limit: int) -> bytes:
    pieces, size = [], 0
    async for piece in request.body:
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            raise PeerRequestInvalid("body too large")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def _authenticated_json_body(body_digest: str) -> bytes:
    if not body_digest:
        return b""
    body = await _read_body(MAX_ADMIN_BODY)
    if hashlib.sha256(body).hexdigest() != body_digest:
        raise PeerAuthFailed("body does not match its signature")
    return body


_CHUNK_ID = re.compile(r"[0-9a-f]{64}")


async def chunk(rt: NodeRuntime, method: str, cid: str, body_digest: str) -> Response:
    if not _CHUNK_ID.fullmatch(cid):
        raise PeerRequestInvalid("not a chunk id")
    if method == "PUT":
        if body_digest != cid:
            raise PeerAuthFailed("a chunk must be signed over its id")
        data = await _read_body(MAX_CHUNK_BODY)
        try:
            await rt.on_disk(rt.chunks.put, cid, data)
        except ChunkCorrupt:
            rt.counters["chunk_put_mismatch"] += 1
            raise PeerRequestInvalid("chunk bytes do not match the id") from None
        return Response(b"", status=201)
    if method == "HEAD":
        held = await rt.on_disk(rt.chunks.holds, cid)
        return Response(b"", status=200 if held else 404)
    try:
        data = await rt.on_disk(rt.chunks.read, cid)
    except ChunkMissing:
        return Response(b"", status=404)
    except ChunkCorrupt:
        rt.counters["chunk_corrupt"] += 1
        return Response(b"", status=404)
    rt.counters["chunks_served_to_peers"] += 1
    return Response(data, status=200, content_type="application/octet-stream")


def _field(doc: dict[str, Any], name: str, *, address: bool = False) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise PeerRequestInvalid(f"{name} is required")
    if address and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
        raise PeerRequestInvalid(f"{name} must be HOST:PORT")
    return value


async def status(rt: NodeRuntime, body: bytes) -> Response:
    doc = rt.engine.status()
    doc["http"] = rt.engine.http_advertise
    doc["zone"] = rt.config.zone
    doc["uploads_in_progress"] = len(rt.spool)
    doc["chunks"] = {
        "stored": rt.chunks.stored_chunks,
        "stored_bytes": rt.chunks.stored_bytes,
        "cached": rt.chunks.cached_chunks,
        "cached_bytes": rt.chunks.cached_bytes,
        "cache_limit_bytes": rt.chunks.cache_bytes,
        "corrupt_reads": rt.chunks.corrupt_reads,
    }
    doc["under_replicated"] = await rt.replication_report()
    doc["peers"] = rt.peers.status()
    doc["counters"] = dict(rt.counters)
    return _json(doc)


async def add_member(rt: NodeRuntime, body: bytes) -> Response:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise PeerRequestInvalid("body is not JSON") from None
    if not isinstance(doc, dict):
        raise PeerRequestInvalid("body must be a JSON object")
    node_id = _field(doc, "node_id")
    if not NODE_ID_RE.fullmatch(node_id):
        raise PeerRequestInvalid("node_id: use 1-64 of A-Z a-z 0-9 _ -")
    zone = doc.get("zone") or "default"
    try:
        await rt.engine.add_member(
            node_id, _field(doc, "raft", address=True), _field(doc, "http", address=True),
            str(zone),
        )
    except MembershipRefused as exc:
        raise MembershipConflict(str(exc)) from None
    return _json({"added": node_id, "voters": list(rt.engine.voters())})


async def remove_member(rt: NodeRuntime, body: bytes, node_id: str) -> Response:
    if node_id not in rt.engine.voters():
        raise UnknownMember(f"{node_id} is not a member")
    try:
        await rt.engine.remove_member(node_id)
    except MembershipRefused as exc:
        raise MembershipConflict(str(exc)) from None
    return _json({"removed": node_id, "voters": list(rt.engine.voters())})


async def transfer_leader(rt: NodeRuntime, body: bytes) -> Response:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise PeerRequestInvalid("body is not JSON") from None
    to = _field(doc if isinstance(doc, dict) else {}, "to")
    try:
        await rt.engine.transfer_leader(to)
    except MembershipRefused as exc:
        raise MembershipConflict(str(exc)) from None
    return _json({"leader": rt.engine.leader()})


async def dispatch(rt: NodeRuntime, method: str, path: str) -> Response:
    body_digest = _authenticate(rt)
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "chunks" and method in ("GET", "HEAD", "PUT"):
        return await chunk(rt, method, parts[1], body_digest)
    if parts == ["health"] and method == "GET":
        return _json({"node_id": rt.config.node_id, "ok": True})
    body = await _authenticated_json_body(body_digest)
    if parts == ["status"] and method == "GET":
        return await status(rt, body)
    if parts == ["members"] and method == "POST":
        return await add_member(rt, body)
    if len(parts) == 2 and parts[0] == "members" and method == "DELETE":
        return await remove_member(rt, body, parts[1])
    if parts == ["leader"] and method == "POST":
        return await transfer_leader(rt, body)
    if parts[0] in ("status", "members", "leader", "chunks", "health"):
        raise PeerMethodUnsupported()
    raise PeerEndpointUnknown()


async def join_cluster(rt: NodeRuntime, url: str) -> None:
    """Ask a member at `url` to add this node, until it says yes."""
    engine = rt.engine
    while engine.http_advertise is None or engine.raft_advertise is None:
        await trio.sleep(0.05)
    payload = {
        "node_id": rt.config.node_id,
        "raft": engine.raft_advertise,
        "http": engine.http_advertise,
        "zone": rt.config.zone,
    }
    target = url.rstrip("/") + "/_cluster/members"
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            try:
                response = await call(client, rt.secret, "POST", target, payload)
                if response.status_code == 200:
                    log.info("joined the cluster through %s", url)
                    return
                log.warning("join through %s refused: %s %s", url, response.status_code,
                            response.text[:200])
            except httpx.HTTPError as exc:
                log.warning("join through %s failed: %r", url, exc)
            await trio.sleep(1.0)
