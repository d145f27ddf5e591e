"""`/_cluster/…`: the internal API on the client port, open only to holders of the secret.

Confirming and dropping chunks in batches, health (which also tells where
this node's chunk data plane listens), status, membership changes and
leadership transfer. Chunk bytes themselves never come here: they travel on
the data plane (`node/cluster/data_plane.py`). Every request must be signed
(`node.cluster.auth`); one that is not gets 401 and its body is never read.
`PeerAPI` is built from the few objects these endpoints serve from, not from
the whole node.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import Response, request

from consensus.engine import Engine, MembershipRefused
from node.cluster.auth import Verifier
from node.cluster.errors import (
    MembershipConflict,
    PeerAuthFailed,
    PeerEndpointUnknown,
    PeerMethodUnsupported,
    PeerRequestInvalid,
    UnknownMember,
)
from node.cluster.gc import GcStatus
from node.cluster.peers import Peers
from node.cluster.repair import RepairStatus
from node.cluster.scrub import ScrubStatus
from node.config import NODE_ID_RE, Config
from node.storage.chunks import ChunkStore
from node.storage.spool import Spool

log = logging.getLogger(__name__)
MAX_ADMIN_BODY = 64 * 1024


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def request_target() -> str:
    """The current request's path and query: what a peer request is signed over."""
    return request.path + (f"?{request.query_string.decode()}" if request.query_string else "")


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


def _field(doc: dict[str, Any], name: str, *, address: bool = False) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise PeerRequestInvalid(f"{name} is required")
    if address and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
        raise PeerRequestInvalid(f"{name} must be HOST:PORT")
    return value


_CHUNK_ID = re.compile(r"[0-9a-f]{64}")
MAX_CHUNK_LIST = 800  # ids in one confirm or drop request (about 55 KiB of JSON)


def _chunk_list(body: bytes) -> list[str]:
    """The `chunks` list of a confirm or drop request: chunk ids, at most MAX_CHUNK_LIST."""
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise PeerRequestInvalid("body is not JSON") from None
    cids = doc.get("chunks") if isinstance(doc, dict) else None
    if (
        not isinstance(cids, list)
        or len(cids) > MAX_CHUNK_LIST
        or not all(isinstance(c, str) and _CHUNK_ID.fullmatch(c) for c in cids)
    ):
        raise PeerRequestInvalid(f"chunks must be a list of at most {MAX_CHUNK_LIST} chunk ids")
    return cids

DiskWork = Callable[..., Awaitable[Any]]


@dataclass
class PeerAPI:
    """The internal endpoints, over the parts of the node they serve from."""

    config: Config
    engine: Engine
    chunks: ChunkStore
    spool: Spool
    peers: Peers
    verifier: Verifier
    counters: Counter[str]
    on_disk: DiskWork  # runs blocking disk work in a bounded worker thread
    replication_report: Callable[[], Awaitable[dict[str, int]]]
    scrub: ScrubStatus
    repair: RepairStatus
    gc: GcStatus

    async def dispatch(self, method: str, path: str) -> Response:
        body_digest = self._authenticate()
        parts = path.strip("/").split("/")
        if parts in (["chunks", "confirm"], ["chunks", "drop"]) and method == "POST":
            body = await _authenticated_json_body(body_digest)
            if parts[1] == "confirm":
                return await self.confirm_chunks(body)
            return await self.drop_chunks(body)
        if parts == ["health"] and method == "GET":
            return _json(
                {"node_id": self.config.node_id, "ok": True, "data": self.peers.data_address}
            )
        body = await _authenticated_json_body(body_digest)
        if parts == ["status"] and method == "GET":
            return await self.status()
        if parts == ["members"] and method == "POST":
            return await self.add_member(body)
        if len(parts) == 2 and parts[0] == "members" and method == "DELETE":
            return await self.remove_member(parts[1])
        if len(parts) == 3 and parts[0] == "members" and parts[2] == "drain":
            if method in ("POST", "DELETE"):
                return await self.drain_member(parts[1], draining=method == "POST")
            raise PeerMethodUnsupported()
        if parts == ["leader"] and method == "POST":
            return await self.transfer_leader(body)
        if parts[0] in ("status", "members", "leader", "chunks", "health"):
            raise PeerMethodUnsupported()
        raise PeerEndpointUnknown()

    def _authenticate(self) -> str:
        """Check the request's proof of the secret; returns the body digest it signed."""
        try:
            return self.verifier.verify(
                request.method, request_target(), request.headers, node_id=self.config.node_id
            )
        except PeerAuthFailed as exc:
            log.warning("refused %s %s: %s", request.method, request.path, exc)
            raise PeerAuthFailed("cluster secret required") from None

    async def confirm_chunks(self, body: bytes) -> Response:
        """Which of the chunks this node stores; each one held counts as touched now,
        so a drop within the grace period spares it (a push is about to commit it)."""
        held = await self.on_disk(self.chunks.confirm, _chunk_list(body))
        return _json({"held": held})

    async def drop_chunks(self, body: bytes) -> Response:
        """Delete chunks an abandoned upload left here, sparing any a recipe uses or a
        push touched within the grace period (see `ChunkStore.drop_abandoned`).

        The barrier first: a recipe committed anywhere before this request is
        in the local state when it is read.
        """
        cids = _chunk_list(body)
        await self.engine.barrier()
        wanted = set(cids)

        def referenced() -> set[str]:
            return {c for chunk_ids in self.engine.blob_chunk_lists() for c in chunk_ids
                    if c in wanted}

        used = await self.on_disk(referenced)
        dropped, kept = await self.on_disk(self.chunks.drop_abandoned, cids, used)
        self.counters["abandoned_chunks_dropped"] += len(dropped)
        self.counters["abandoned_chunks_kept"] += len(kept)
        return _json({"dropped": dropped, "kept": kept})

    async def status(self) -> Response:
        doc = self.engine.status()
        doc["http"] = self.engine.http_advertise
        doc["zone"] = self.config.zone
        doc["uploads_in_progress"] = len(self.spool)
        chunks = self.chunks
        doc["chunks"] = {
            "stored": chunks.stored_chunks,
            "stored_bytes": chunks.stored_bytes,
            "cached": chunks.cached_chunks,
            "cached_bytes": chunks.cached_bytes,
            "cache_limit_bytes": chunks.cache_bytes,
            "corrupt_reads": chunks.corrupt_reads,
        }
        doc["scrub"] = self.scrub.as_dict(len(await self.on_disk(chunks.quarantined)))
        doc["repair"] = self.repair.as_dict()
        doc["gc"] = self.gc.as_dict()
        doc["under_replicated"] = await self.replication_report()
        doc["peers"] = self.peers.status()
        doc["counters"] = dict(self.counters)
        return _json(doc)

    async def add_member(self, body: bytes) -> Response:
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
            await self.engine.add_member(
                node_id, _field(doc, "raft", address=True), _field(doc, "http", address=True),
                str(zone),
            )
        except MembershipRefused as exc:
            raise MembershipConflict(str(exc)) from None
        return _json({"added": node_id, "voters": list(self.engine.voters())})

    async def remove_member(self, node_id: str) -> Response:
        if node_id not in self.engine.voters():
            raise UnknownMember(f"{node_id} is not a member")
        try:
            await self.engine.remove_member(node_id)
        except MembershipRefused as exc:
            raise MembershipConflict(str(exc)) from None
        return _json({"removed": node_id, "voters": list(self.engine.voters())})

    async def drain_member(self, node_id: str, *, draining: bool) -> Response:
        """Start (or cancel) moving everything `node_id` holds to the other members.

        Refused while the members left to own chunks would be fewer than R: the
        drain could never finish without a chunk going below R copies.
        """
        voters = set(self.engine.voters())
        if node_id not in voters:
            raise UnknownMember(f"{node_id} is not a member")
        if draining:
            staying = voters - self.engine.draining() - {node_id}
            if len(staying) < self.config.replication:
                left = len(staying)
                raise MembershipConflict(
                    f"draining {node_id} would leave {left} member{'' if left == 1 else 's'} "
                    f"to hold the {self.config.replication} copies of every chunk "
                    "(replication); add a member first"
                )
        try:
            await self.engine.drain_member(node_id, draining)
        except MembershipRefused as exc:
            raise MembershipConflict(str(exc)) from None
        log.info("%s of %s committed", "drain" if draining else "drain cancel", node_id)
        return _json({"node_id": node_id, "draining": sorted(self.engine.draining())})

    async def transfer_leader(self, body: bytes) -> Response:
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            raise PeerRequestInvalid("body is not JSON") from None
        to = _field(doc if isinstance(doc, dict) else {}, "to")
        try:
            await self.engine.transfer_leader(to)
        except MembershipRefused as exc:
            raise MembershipConflict(str(exc)) from None
        return _json({"leader": self.engine.leader()})
