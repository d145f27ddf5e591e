"""The other members as this node sees them: how to reach them, and how well.

A background task asks every peer for `/_cluster/health` once a second and
keeps a moving average of the round trip; a peer that fails to answer is
marked down until it answers again. Chunk reads go to holders in the order
this gives (same zone first, then lowest round trip), and writes skip peers
marked down. Every request carries proof of the cluster secret; client
credentials never travel here.

Chunk bytes do not travel over HTTP: `get_chunk`, `put_chunk` and
`put_chunk_file` go through the data plane (`node/cluster/data_plane.py`),
at the address each peer gives in its signed health answer. A peer whose
data plane address is not known yet is asked for its health first; one that
gives none is not up, and a transfer to it fails with PeerError.

With `tls` (the node's port serves TLS, `node/cluster/cluster_tls.py`) the
HTTP clients speak HTTPS, ask for the cluster's server name by SNI and check
the answer against the cluster CA; with `data_ssl` the data plane client
wraps its connections in mutual TLS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from consensus.engine import Engine
from node.cluster.auth import sign
from node.cluster.cluster_tls import PEER_EXTENSIONS, ClusterTLS, peer_http_context, peer_url
from node.cluster.data_plane import DataPlaneClient
from node.cluster.errors import PeerError, PeerSentWrongBytes, PeerUnreachable, RelayBusy
from node.cluster.placement import Placed, score

log = logging.getLogger(__name__)

HEALTH_EVERY = 1.0
DOWN_AFTER_FAILURES = 2
EWMA = 0.3
RTT_BAND = 0.002  # seconds: round trips this close are the same distance
CHUNK_LIST_BATCH = 500  # chunk ids per confirm or drop request
CHUNK_LIST_TIMEOUT = 10.0  # seconds for a peer to confirm or drop one batch of chunks
RELAY_CONNECT = 2.0  # seconds to open a relay connection to a peer
RELAY_PEERS = 8  # the relay pool holds `max_relays_per_peer` connections for this many peers


@dataclass
class PeerState:
    node_id: str
    http: str
    zone: str
    rtt: float | None = None  # seconds, moving average of health round trips
    fetch_time: float | None = None  # seconds, moving average of whole chunk fetches
    up: bool = True
    failures: int = 0
    bad_chunks: int = 0  # chunks that arrived not matching their id
    data: str | None = None  # HOST:PORT of its data plane, from its health answer

    def observe_fetch(self, seconds: float) -> None:
        self.fetch_time = (
            seconds if self.fetch_time is None else EWMA * seconds + (1 - EWMA) * self.fetch_time
        )


class Peers:
    """Membership with addresses and health, and the signed HTTP client to reach peers."""

    def __init__(
        self, engine: Engine, *, node_id: str, zone: str, secret: bytes,
        max_relays_per_peer: int = 64, relay_idle_seconds: float = 30.0,
        tls: ClusterTLS | None = None, data_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.zone = zone
        self.secret = secret
        self.tls = tls is not None
        # What every request to a peer carries: the SNI name of the cluster's certificate.
        self.extensions: dict[str, Any] = dict(PEER_EXTENSIONS) if tls else {}
        verify = peer_http_context(secret) if tls else True
        self.state: dict[str, PeerState] = {}
        self.client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(30.0, connect=2.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self.max_relays_per_peer = max_relays_per_peer
        self.relay_idle_seconds = relay_idle_seconds
        self.relay_client = httpx.AsyncClient(
            verify=verify,
            # read/write: the longest wait for the peer to take or give a byte.
            timeout=httpx.Timeout(relay_idle_seconds, connect=RELAY_CONNECT, pool=RELAY_CONNECT),
            limits=httpx.Limits(
                max_connections=max_relays_per_peer * RELAY_PEERS,
                max_keepalive_connections=max_relays_per_peer,
            ),
        )
        self._relays: dict[str, int] = {}  # peer id → relays to it in flight
        self.data = DataPlaneClient(node_id, secret, ssl_context=data_ssl)
        # Where this node's own data plane listens, as peers reach it (set by `serve`).
        self.data_address: str | None = None

    @contextmanager
    def relay_slot(self, node_id: str) -> Iterator[None]:
        """Hold one of the relays `node_id` may take at once; RelayBusy when none is free."""
        if self._relays.get(node_id, 0) >= self.max_relays_per_peer:
            raise RelayBusy(
                "too many uploads are being relayed to the node holding this session; retry later"
            )
        self._relays[node_id] = self._relays.get(node_id, 0) + 1
        try:
            yield
        finally:
            self._relays[node_id] -= 1
            if not self._relays[node_id]:
                del self._relays[node_id]

    def placed(self) -> list[Placed]:
        """Every member (this node included) as placement sees it."""
        self.refresh()
        draining = self.engine.draining()
        members = [Placed(m.node_id, m.zone, m.node_id in draining) for m in self.engine.members()]
        if not any(m.node_id == self.node_id for m in members):
            members.append(Placed(self.node_id, self.zone))
        return members

    def refresh(self) -> None:
        """Track exactly the members the replicated state lists."""
        current = {m.node_id: m for m in self.engine.members() if m.node_id != self.node_id}
        for node_id in list(self.state):
            if node_id not in current:
                del self.state[node_id]
        for node_id, m in current.items():
            known = self.state.get(node_id)
            if known is None or (known.http, known.zone) != (m.http, m.zone):
                self.state[node_id] = PeerState(node_id, m.http, m.zone)

    def get(self, node_id: str) -> PeerState | None:
        """A peer by id, looking at the replicated member list again on a miss."""
        if node_id not in self.state:
            self.refresh()
        return self.state.get(node_id)

    def is_up(self, node_id: str) -> bool:
        if node_id == self.node_id:
            return True
        peer = self.state.get(node_id)
        return peer is not None and peer.up

    def read_order(self, candidates: list[Placed], owners: int, chunk: str = "") -> list[str]:
        """Holders to ask, best first: live before down, the first `owners` candidates
        (the chunk's owners) before the rest, same zone, then lowest round trip.

        Round trips within one `RTT_BAND` of each other count as equal: on one
        network they differ by noise, and following the noise would send every
        fetch of this node to the same holder. Equal holders are ordered by a
        hash of this node, the chunk and the holder, so the fetches of many
        nodes pulling one blob at once spread over all its holders' links.
        Without a chunk, candidates keep their placement order where health
        says nothing.
        """
        ranked = []
        for position, member in enumerate(candidates):
            if member.node_id == self.node_id:
                continue
            peer = self.state.get(member.node_id)
            if peer is None:
                continue
            rtt = peer.rtt if peer.rtt is not None else 1.0
            ranked.append((
                not peer.up,
                position >= owners,
                peer.zone != self.zone,
                int(rtt / RTT_BAND),
                score(chunk, f"{self.node_id}/{member.node_id}") if chunk else 0,
                rtt,
                position,
                member.node_id,
            ))
        return [entry[-1] for entry in sorted(ranked)]

    def url(self, node_id: str, path: str) -> str:
        peer = self.get(node_id)
        if peer is None:
            raise PeerError(f"{node_id} is not a known member")
        return peer_url(peer.http, path, tls=self.tls)

    async def request(
        self, node_id: str, method: str, path: str, *, content: bytes = b"",
        body_digest: str = "", timeout: float | None = None,
    ) -> httpx.Response:
        headers = sign(self.secret, method, path, node_id=node_id, body_digest=body_digest)
        kwargs = {"timeout": timeout} if timeout is not None else {}
        try:
            return await self.client.request(
                method, self.url(node_id, path), content=content or None, headers=headers,
                extensions=self.extensions, **kwargs,
            )
        except httpx.HTTPError as exc:
            self.mark_failure(node_id)
            raise PeerError(f"{node_id}: {exc!r}") from exc

    def mark_failure(self, node_id: str) -> None:
        peer = self.state.get(node_id)
        if peer is None:
            return
        peer.failures += 1
        if peer.failures >= DOWN_AFTER_FAILURES and peer.up:
            peer.up = False
            log.warning("peer %s (%s) is down", node_id, peer.http)

    def mark_success(self, node_id: str, rtt: float | None = None) -> None:
        peer = self.state.get(node_id)
        if peer is None:
            return
        if not peer.up:
            log.info("peer %s (%s) is up again", node_id, peer.http)
        peer.up, peer.failures = True, 0
        if rtt is not None:
            peer.rtt = rtt if peer.rtt is None else EWMA * rtt + (1 - EWMA) * peer.rtt

    async def _data_peer(self, node_id: str) -> tuple[PeerState, str]:
        """The peer and its data plane address, asking for its health once when the
        address is not known yet; PeerError when it is not a member or gives none."""
        peer = self.get(node_id)
        if peer is None:
            raise PeerError(f"{node_id} is not a known member")
        if peer.data is None:
            await self.check(node_id)
            peer = self.state.get(node_id, peer)
        if peer.data is None:
            raise PeerError(f"{node_id} has not told where its data plane listens")
        return peer, peer.data

    async def get_chunk(self, node_id: str, cid: str) -> bytes:
        """The chunk's bytes from the peer, already checked against `cid` (a fresh
        bytearray the caller owns); PeerSentWrongBytes, counted, when they do not match."""
        peer, address = await self._data_peer(node_id)
        started = time.monotonic()
        try:
            data = await self.data.get(address, cid)
        except PeerSentWrongBytes:
            peer.bad_chunks += 1
            raise
        except PeerUnreachable:
            self.mark_failure(node_id)
            raise
        peer.observe_fetch(time.monotonic() - started)
        return data  # type: ignore[return-value]  # bytes-like; copying it would cost a pass

    async def put_chunk(self, node_id: str, cid: str, data: bytes) -> None:
        """Store the chunk durably on the peer, which checks it against `cid`."""
        _, address = await self._data_peer(node_id)
        try:
            await self.data.put(address, cid, data)
        except PeerUnreachable:
            self.mark_failure(node_id)
            raise

    async def put_chunk_file(self, node_id: str, cid: str, path: Path) -> None:
        """`put_chunk` of the chunk in the file at `path`, sent from the file as it is
        (`sendfile`); OSError when the file cannot be read."""
        _, address = await self._data_peer(node_id)
        try:
            await self.data.put_file(address, cid, path)
        except PeerUnreachable:
            self.mark_failure(node_id)
            raise

    async def chunk_list_call(self, node_id: str, action: str, cids: list[str]) -> dict[str, Any]:
        """POST a list of chunk ids to `/_cluster/chunks/<action>` (confirm, drop), signed
        over the body; the peer's JSON answer, or PeerError."""
        body = json.dumps({"chunks": cids}).encode()
        response = await self.request(
            node_id, "POST", f"/_cluster/chunks/{action}", content=body,
            body_digest=hashlib.sha256(body).hexdigest(), timeout=CHUNK_LIST_TIMEOUT,
        )
        if response.status_code != 200:
            raise PeerError(f"{node_id} answered {response.status_code} to chunks/{action}")
        try:
            answer = response.json()
        except ValueError:
            raise PeerError(f"{node_id} answered chunks/{action} with no JSON") from None
        if not isinstance(answer, dict):
            raise PeerError(f"{node_id} answered chunks/{action} with no JSON object")
        return answer

    async def chunk_list_answers(
        self, node_id: str, action: str, cids: list[str]
    ) -> AsyncIterator[dict[str, Any]]:
        """`chunk_list_call` for any number of ids, `CHUNK_LIST_BATCH` a request: each
        answer as it comes, so what arrived before a PeerError still counts."""
        for start in range(0, len(cids), CHUNK_LIST_BATCH):
            yield await self.chunk_list_call(
                node_id, action, cids[start : start + CHUNK_LIST_BATCH]
            )

    async def check(self, node_id: str) -> None:
        started = time.monotonic()
        try:
            response = await self.request(node_id, "GET", "/_cluster/health", timeout=2.0)
        except PeerError as exc:
            log.debug("health check of %s failed: %s", node_id, exc)
            return
        seconds = time.monotonic() - started
        log.debug("health check of %s: %d in %.1f ms", node_id, response.status_code,
                  seconds * 1000)
        if response.status_code == 200:
            self.mark_success(node_id, seconds)
            self._learn_data_address(node_id, response)
        else:
            self.mark_failure(node_id)

    def _learn_data_address(self, node_id: str, response: httpx.Response) -> None:
        """Keep the data plane address the peer's health answer gives, if it is usable."""
        peer = self.state.get(node_id)
        if peer is None:
            return
        try:
            address = response.json().get("data")
        except (ValueError, AttributeError):
            address = None
        if not _usable_address(address):
            address = None
        if address != peer.data:
            if peer.data is not None:
                self.data.forget(peer.data)
            peer.data = address

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep membership and health current, and the data plane client's connections
        open, for as long as the node runs."""
        try:
            async with trio.open_nursery() as running:
                await running.start(self.data.run)
                task_status.started()
                while True:
                    self.refresh()
                    async with trio.open_nursery() as nursery:
                        for node_id in list(self.state):
                            nursery.start_soon(self.check, node_id)
                    await trio.sleep(HEALTH_EVERY)
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()
                await self.relay_client.aclose()

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "node_id": p.node_id,
                "http": p.http,
                "zone": p.zone,
                "up": p.up,
                "rtt_ms": None if p.rtt is None else round(p.rtt * 1000, 2),
                "chunk_fetch_ms": None if p.fetch_time is None else round(p.fetch_time * 1000, 2),
                "bad_chunks": p.bad_chunks,
                "data": p.data,
            }
            for p in sorted(self.state.values(), key=lambda p: p.node_id)
        ]


def _usable_address(address: object) -> bool:
    """Whether a peer's word for its data plane address is HOST:PORT we could dial."""
    if not isinstance(address, str) or len(address) > 300:
        return False
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
