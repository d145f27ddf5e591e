"""Signed requests to another node's internal API (used by peers, `--join` and the CLI).

A request is signed for the node that is to accept it. Callers that start from
a URL and do not know that node's id (the admin CLI, `--join`) leave `node_id`
out: the node at the URL is first asked `GET /_cluster/health`, signed for any
node, and its answer names it (see `node.cluster.auth`).

An `https://` URL is a node with cluster TLS: the request asks for the
cluster's server name by SNI and checks the certificate against the CA the
secret derives (`node/cluster/cluster_tls.py`), so no CA file is needed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from node.cluster.auth import ANY_NODE, ANY_NODE_REQUESTS, sign
from node.cluster.cluster_tls import PEER_EXTENSIONS, peer_http_context

HEALTH_PATH = "/_cluster/health"


def _target(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _health_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, HEALTH_PATH, "", ""))


def _extensions(url: str) -> dict[str, Any]:
    return dict(PEER_EXTENSIONS) if urlsplit(url).scheme == "https" else {}


def internal_client(secret: bytes, url: str, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client for the peer API at `url` (and its cluster): over HTTPS it trusts
    the cluster CA only."""
    https = urlsplit(url).scheme == "https"
    return httpx.AsyncClient(verify=peer_http_context(secret) if https else True, **kwargs)


def _named_node(response: httpx.Response) -> str | None:
    """The node id a health answer gives, or None when it is not a Flotilla node's yes."""
    if response.status_code != 200:
        return None
    try:
        doc = response.json()
    except ValueError:
        return None
    node_id = doc.get("node_id") if isinstance(doc, dict) else None
    return node_id if isinstance(node_id, str) and node_id else None


def signed_headers(
    secret: bytes, method: str, url: str, body: bytes = b"", *, node_id: str
) -> dict[str, str]:
    digest = hashlib.sha256(body).hexdigest() if body else ""
    return sign(secret, method, _target(url), node_id=node_id, body_digest=digest)


def _request_parts(
    secret: bytes, method: str, url: str, payload: dict[str, Any] | None, node_id: str
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = signed_headers(secret, method, url, body, node_id=node_id)
    if body:
        headers["Content-Type"] = "application/json"
    return body, headers


def _known_destination(method: str, url: str, node_id: str | None) -> str | None:
    if node_id is not None:
        return node_id
    if (method.upper(), _target(url)) in ANY_NODE_REQUESTS:
        return ANY_NODE
    return None


async def call(
    client: httpx.AsyncClient,
    secret: bytes,
    method: str,
    url: str,
    payload: dict[str, Any] | None = None,
    *,
    node_id: str | None = None,
) -> httpx.Response:
    """One signed request to the node `node_id` at `url`; without `node_id`, the node
    at `url` is asked who it is first, and a refusal of that question is the answer."""
    destination = _known_destination(method, url, node_id)
    if destination is None:
        health = await call(client, secret, "GET", _health_url(url))
        destination = _named_node(health)
        if destination is None:
            return health
    body, headers = _request_parts(secret, method, url, payload, destination)
    return await client.request(method, url, content=body, headers=headers,
                                extensions=_extensions(url))


def call_sync(
    secret: bytes, method: str, url: str, payload: dict[str, Any] | None = None,
    *, node_id: str | None = None, timeout: float = 30.0,
) -> httpx.Response:
    """`call` for code outside trio (the CLI, tests, scripts)."""
    destination = _known_destination(method, url, node_id)
    if destination is None:
        health = call_sync(secret, "GET", _health_url(url), timeout=timeout)
        destination = _named_node(health)
        if destination is None:
            return health
    body, headers = _request_parts(secret, method, url, payload, destination)
    https = urlsplit(url).scheme == "https"
    with httpx.Client(verify=peer_http_context(secret) if https else True,
                      timeout=timeout) as client:
        return client.request(method, url, content=body, headers=headers,
                              extensions=_extensions(url))
