"""Signed requests to another node's internal API (used by peers and the CLI)."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from node.cluster.auth import sign


def _target(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def signed_headers(secret: bytes, method: str, url: str, body: bytes = b"") -> dict[str, str]:
    digest = hashlib.sha256(body).hexdigest() if body else ""
    return sign(secret, method, _target(url), body_digest=digest)


async def call(
    client: httpx.AsyncClient,
    secret: bytes,
    method: str,
    url: str,
    payload: dict[str, Any] | None = None,
) -> httpx.Response:
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = signed_headers(secret, method, url, body)
    if body:
        headers["Content-Type"] = "application/json"
    return await client.request(method, url, content=body, headers=headers)


def call_sync(
    secret: bytes, method: str, url: str, payload: dict[str, Any] | None = None,
    *, timeout: float = 30.0,
) -> httpx.Response:
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = signed_headers(secret, method, url, body)
    if body:
        headers["Content-Type"] = "application/json"
    return httpx.request(method, url, content=body, headers=headers, timeout=timeout)
