"""`/_cluster/…`: the internal API on the client port, open only to holders of the secret.

Status, membership changes and leadership transfer live here; the chunk
transfer between peers joins them later. Every request must be signed
(`node.cluster.auth`); one that is not gets 401 and its body is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
import trio
from quart import Response, request

from consensus.engine import MembershipRefused
from node.api.errors import NotFound, RegistryError, Unauthorized, Unsupported
from node.cluster.auth import PeerAuthFailed
from node.cluster.client import call
from node.config import NODE_ID_RE
from node.runtime import NodeRuntime

log = logging.getLogger(__name__)
MAX_ADMIN_BODY = 64 * 1024


class BadRequest(RegistryError):
    code, status, default_message = "BAD_REQUEST", 400, "malformed cluster request"


class Conflict(RegistryError):
    code, status, default_message = "CONFLICT", 409, "the change cannot be made"


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


async def _authenticated_body(rt: NodeRuntime) -> bytes:
    target = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    try:
        body_digest = rt.peer_auth.verify(request.method, target, request.headers)
    except PeerAuthFailed as exc:
        log.warning("refused %s %s: %s", request.method, request.path, exc)
        raise Unauthorized("cluster secret required") from None
    if not body_digest:
        return b""
    body = bytearray()
    async for piece in request.body:
        body += piece
        if len(body) > MAX_ADMIN_BODY:
            raise BadRequest("body too large")
    if hashlib.sha256(body).hexdigest() != body_digest:
        raise Unauthorized("body does not match its signature")
    return bytes(body)


def _field(doc: dict[str, Any], name: str, *, address: bool = False) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} is required")
    if address and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
        raise BadRequest(f"{name} must be HOST:PORT")
    return value


async def status(rt: NodeRuntime, body: bytes) -> Response:
    doc = rt.engine.status()
    doc["http"] = rt.engine.http_advertise
    doc["zone"] = rt.config.zone
    doc["uploads_in_progress"] = len(rt.spool)
    doc["counters"] = dict(rt.counters)
    return _json(doc)


async def add_member(rt: NodeRuntime, body: bytes) -> Response:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    node_id = _field(doc, "node_id")
    if not NODE_ID_RE.fullmatch(node_id):
        raise BadRequest("node_id: use 1-64 of A-Z a-z 0-9 _ -")
    zone = doc.get("zone") or "default"
    try:
        await rt.engine.add_member(
            node_id, _field(doc, "raft", address=True), _field(doc, "http", address=True),
            str(zone),
        )
    except MembershipRefused as exc:
        raise Conflict(str(exc)) from None
    return _json({"added": node_id, "voters": list(rt.engine.voters())})


async def remove_member(rt: NodeRuntime, body: bytes, node_id: str) -> Response:
    if node_id not in rt.engine.voters():
        raise NotFound(f"{node_id} is not a member")
    try:
        await rt.engine.remove_member(node_id)
    except MembershipRefused as exc:
        raise Conflict(str(exc)) from None
    return _json({"removed": node_id, "voters": list(rt.engine.voters())})


async def transfer_leader(rt: NodeRuntime, body: bytes) -> Response:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise BadRequest("body is not JSON") from None
    to = _field(doc if isinstance(doc, dict) else {}, "to")
    try:
        await rt.engine.transfer_leader(to)
    except MembershipRefused as exc:
        raise Conflict(str(exc)) from None
    return _json({"leader": rt.engine.leader()})


async def dispatch(rt: NodeRuntime, method: str, path: str) -> Response:
    body = await _authenticated_body(rt)
    parts = path.strip("/").split("/")
    if parts == ["status"] and method == "GET":
        return await status(rt, body)
    if parts == ["members"] and method == "POST":
        return await add_member(rt, body)
    if len(parts) == 2 and parts[0] == "members" and method == "DELETE":
        return await remove_member(rt, body, parts[1])
    if parts == ["leader"] and method == "POST":
        return await transfer_leader(rt, body)
    if parts[0] in ("status", "members", "leader"):
        raise Unsupported()
    raise NotFound()


async def join_cluster(rt: NodeRuntime, url: str) -> None:
    """Ask a member at `url` to add this node, until it says yes."""
    engine = rt.engine
    while engine.http_advertise is None or getattr(engine, "raft_advertise", None) is None:
        await trio.sleep(0.05)
    payload = {
        "node_id": rt.config.node_id,
        "raft": engine.raft_advertise,  # type: ignore[attr-defined]
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
