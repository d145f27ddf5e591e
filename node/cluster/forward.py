"""Upload requests that arrive at a node other than the one holding the session.

An upload session lives on the node that received its POST, and its id names
that node. Behind a round-robin load balancer the PATCH, PUT, GET or DELETE
of a session may land anywhere; the receiving node then relays the request,
body streamed, to the session's node over the peer API and hands back its
answer, so the client never sees "blob upload unknown" for a live session.

A relay holds a connection for as long as its client takes to send the body,
so relays use the peers' relay pool, never the one health checks and chunk
placement use; at most `max_relays_per_peer` run to one peer at once (more
are answered 503 with Retry-After at once, not queued), and each gives up
when the peer takes no byte, or sends none back, for `relay_idle_seconds`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import httpx
from quart import Response, request

from node.cluster.auth import sign
from node.cluster.errors import RelayBusy, UploadNodeUnreachable
from node.cluster.peer_api import request_target
from node.cluster.peers import Peers

FORWARDED = "X-Flotilla-Forwarded"
# Request headers the session's node needs; everything else stays here. The
# request id (always set: node/request_log.py puts it on every request) makes
# the two nodes' log lines of one request share it.
PASS_REQUEST = ("Content-Type", "Content-Range", "Content-Length", "X-Request-Id")
# Response headers the client needs back.
PASS_RESPONSE = (
    "Location", "Range", "Docker-Upload-UUID", "Docker-Content-Digest", "Content-Type",
    "Content-Range", "Retry-After",
)


def session_node(session_id: str) -> str:
    return session_id.split(".", 1)[0]


async def forward_upload(peers: Peers, owner: str, counters: Counter[str]) -> Response:
    """Relay this upload request to `owner`; UploadNodeUnreachable when it cannot be."""
    peer = peers.get(owner)
    if peer is None or request.headers.get(FORWARDED):
        # Unknown node, or a request that was already relayed once: no loops.
        raise UploadNodeUnreachable(session_node=owner[:64])
    target = request_target()
    headers = {name: request.headers[name] for name in PASS_REQUEST if name in request.headers}
    headers.update(sign(peers.secret, request.method, target, node_id=owner))
    headers[FORWARDED] = peers.node_id

    async def body() -> AsyncIterator[bytes]:
        async for piece in request.body:
            yield bytes(piece)

    relays = peers.relay_client
    try:
        with peers.relay_slot(owner):
            upstream = await relays.send(
                relays.build_request(
                    request.method, peers.url(owner, target), headers=headers, content=body(),
                    extensions=peers.extensions,
                )
            )
    except httpx.PoolTimeout:
        raise RelayBusy("too many uploads are being relayed; retry later") from None
    except httpx.HTTPError as exc:
        if isinstance(exc, httpx.ConnectError):
            # Only a refused connection says the peer is down; a slow relay may be
            # its client's doing, and health checks judge the peer on their own.
            peers.mark_failure(owner)
        raise UploadNodeUnreachable(
            "the node holding this upload session cannot be reached", session_node=owner[:64]
        ) from None
    counters["uploads_forwarded"] += 1
    response = Response(upstream.content, status=upstream.status_code)
    for name in PASS_RESPONSE:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    return response
