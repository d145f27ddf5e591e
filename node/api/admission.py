"""Admission control: how many client connections and requests a node takes at once.

Every connection and every request in flight holds memory (buffers bounded
in `request_bodies.py`) and a task, so both are capped, and past a cap the
client is told to come back (503 with `Retry-After`, the OCI error body)
instead of being queued: a queue would hold the same memory the cap exists
to bound. Like nginx's `limit_conn`, a connection past the cap is still
accepted and its first request read, so the client gets an answer it
understands rather than a reset; only a further overflow past that is closed
at accept.

Two kinds of traffic never compete with clients for these slots: the probes
(the base check `/v2/`, `/healthz`, `/readyz` and `/metrics`, what load
balancers, healthchecks and scrapers ask, so a busy node can still be seen
to be busy) are never refused, and the peer API (`/_cluster/…`, other nodes' health checks,
chunk copies and status) has a budget of requests of its own, so a node
flooded by clients still answers its peers. Peer requests on a connection
past the client cap are served too.

Hypercorn has no connection cap, so the class that serves one accepted
connection is replaced by `AdmittedTCPServer`, which counts them per node
(each node's Hypercorn configuration carries its own `Admission`).
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import hypercorn.trio.run as hypercorn_run
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.utils import parse_socket_addr

from node.api.errors import AtCapacity

RETRY_AFTER = 1  # seconds; a busy node frees slots as fast as requests finish
Address = tuple[str, int]
PROBES = frozenset(("/v2", "/v2/", "/healthz", "/readyz", "/metrics"))


class Budget(Enum):
    """Which cap a request counts against."""

    CLIENT = "client"
    PEER = "peer"
    NONE = "none"  # never refused: the probes


def budget_of(path: str) -> Budget:
    if path.startswith("/_cluster/"):
        return Budget.PEER
    if path in PROBES:
        return Budget.NONE
    return Budget.CLIENT


class Admission:
    """This node's caps and what currently holds them."""

    def __init__(self, *, max_connections: int, max_requests: int) -> None:
        self.max_connections = max_connections
        # Connections past the cap that still get an answer (or serve a peer).
        self.overflow = max(16, max_connections // 4)
        self.max_requests = max_requests
        self.connections = 0
        self.requests: Counter[Budget] = Counter()
        self._past_cap: set[Address] = set()  # client addresses of connections over the cap

    @contextmanager
    def connection(self, address: Address | None) -> Iterator[bool]:
        """Hold a connection slot; yields False when the connection must be closed at once."""
        if self.connections >= self.max_connections + self.overflow:
            yield False
            return
        past_cap = self.connections >= self.max_connections and address is not None
        self.connections += 1
        if past_cap:
            assert address is not None
            self._past_cap.add(address)
        try:
            yield True
        finally:
            self.connections -= 1
            if past_cap:
                assert address is not None
                self._past_cap.discard(address)

    @contextmanager
    def request(self, path: str, client: Address | None) -> Iterator[AtCapacity | None]:
        """Hold a request slot while the request is served; yields the refusal when over a cap."""
        budget = budget_of(path)
        if budget is Budget.NONE:
            yield None
            return
        if budget is Budget.CLIENT and client in self._past_cap:
            yield AtCapacity("this node is at its limit of connections; retry later",
                             retry_after=RETRY_AFTER, close=True)
            return
        if self.requests[budget] >= self.max_requests:
            yield AtCapacity(retry_after=RETRY_AFTER)
            return
        self.requests[budget] += 1
        try:
            yield None
        finally:
            self.requests[budget] -= 1


class AdmittedConfig(HypercornConfig):
    """Hypercorn's configuration, carrying the node's `Admission`, and the TLS context
    its listener wraps connections in (`node/tls.py`) instead of one Hypercorn would
    build from certificate files: that one could never change its certificate."""

    admission: Admission | None = None
    tls_context: ssl.SSLContext | None = None

    @property
    def ssl_enabled(self) -> bool:
        # Hypercorn's trio worker asks this to make the bound sockets secure ones.
        return self.tls_context is not None or super().ssl_enabled

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_context is not None:
            return self.tls_context
        return super().create_ssl_context()


class AdmittedTCPServer(TCPServer):
    """Hypercorn's connection server, holding one of the node's connection slots."""

    async def run(self) -> None:
        admission = getattr(self.config, "admission", None)
        if admission is None:
            await super().run()
            return
        try:
            # Under TLS the socket is the SSL stream's transport's.
            sock = getattr(self.stream, "transport_stream", self.stream).socket
            address = parse_socket_addr(sock.family, sock.getpeername())
        except (AttributeError, OSError):
            address = None
        with admission.connection(address) as admitted:
            if admitted:
                await super().run()
            else:
                await self.stream.aclose()

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client has gone. Hypercorn would keep the connection's task, its socket
        # and so its slot until the keep-alive timer fired, up to 75 s later.
        await self.idle_task.stop()

    async def _close(self) -> None:
        # Hypercorn half-closes the socket (send_eof) without its send lock, so a
        # response going out at that moment, typically one answered as the client
        # hangs up, raised BusyResourceError into the application and logged a
        # traceback. Closing waits for the send in progress instead.
        if self.send_lock.statistics().owner is trio.lowlevel.current_task():
            await super()._close()
        else:
            async with self.send_lock:
                await super()._close()


def cap_connections() -> None:
    """Make Hypercorn's trio worker serve each connection through `AdmittedTCPServer`.

    Process-wide but inert for a server whose configuration carries no `Admission`.
    """
    hypercorn_run.TCPServer = AdmittedTCPServer  # type: ignore[misc]
