"""Joining a running cluster: ask a member to add this node, until it says yes.

A node started with `--join URL` is not yet in the Raft group. Once its own
HTTP and Raft addresses are known, it asks the member at URL, over the signed
peer API, to add it (`POST /_cluster/members`), and asks again every second
until the answer is yes; the new membership then reaches it through Raft.
"""

from __future__ import annotations

import logging

import httpx
import trio

from consensus.engine import Engine
from node.cluster.client import call, internal_client

log = logging.getLogger(__name__)


async def join_cluster(
    engine: Engine, *, node_id: str, zone: str, secret: bytes, url: str
) -> None:
    """Ask a member at `url` to add this node, until it says yes."""
    while engine.http_advertise is None or engine.raft_advertise is None:
        await trio.sleep(0.05)
    payload = {
        "node_id": node_id,
        "raft": engine.raft_advertise,
        "http": engine.http_advertise,
        "zone": zone,
    }
    target = url.rstrip("/") + "/_cluster/members"
    async with internal_client(secret, url, timeout=30) as client:
        while True:
            try:
                response = await call(client, secret, "POST", target, payload)
                if response.status_code == 200:
                    log.info("joined the cluster through %s", url)
                    return
                log.warning("join through %s refused: %s %s", url, response.status_code,
                            response.text[:200])
            except httpx.HTTPError as exc:
                log.warning("join through %s failed: %r", url, exc)
            await trio.sleep(1.0)
