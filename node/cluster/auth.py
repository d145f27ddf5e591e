"""Proof of the cluster secret on the internal HTTP API (`/_cluster/…`).

Every internal request carries a timestamp and an HMAC-SHA256, under the
cluster secret, of the method, the path with its query, the timestamp and
the digest of the body (empty when there is none). A node accepts a request
only when the MAC is right, the timestamp lies within a few seconds of its
own clock, and that exact signature was not seen before in the window, so a
captured request cannot be replayed. The secret itself never travels.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from node.cluster.errors import PeerAuthFailed

TIME_HEADER = "X-Flotilla-Time"
BODY_HEADER = "X-Flotilla-Body-Digest"
SIGNATURE_HEADER = "X-Flotilla-Signature"
REPLAY_WINDOW = 10.0
SECRET_BYTES = 32


def _mac(secret: bytes, method: str, target: str, timestamp: str, body_digest: str) -> str:
    message = "\n".join((method.upper(), target, timestamp, body_digest)).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(
    secret: bytes, method: str, target: str, *, body_digest: str = "", now: float | None = None
) -> dict[str, str]:
    """Headers that prove the secret for one request to `target` (path and query)."""
    timestamp = f"{time.time() if now is None else now:.3f}"
    headers = {
        TIME_HEADER: timestamp,
        SIGNATURE_HEADER: _mac(secret, method, target, timestamp, body_digest),
    }
    if body_digest:
        headers[BODY_HEADER] = body_digest
    return headers


class Verifier:
    """Checks signed requests and remembers recent signatures to refuse replays."""

    def __init__(self, secret: bytes, *, window: float = REPLAY_WINDOW) -> None:
        self.secret = secret
        self.window = window
        self._seen: dict[str, float] = {}

    def verify(
        self, method: str, target: str, headers: Mapping[str, str], *, now: float | None = None
    ) -> str:
        """Accept or raise PeerAuthFailed; returns the signed body digest ('' if none)."""
        now = time.time() if now is None else now
        timestamp = headers.get(TIME_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        body_digest = headers.get(BODY_HEADER, "")
        try:
            sent = float(timestamp)
        except ValueError:
            raise PeerAuthFailed("missing or malformed timestamp") from None
        if abs(now - sent) > self.window:
            raise PeerAuthFailed("timestamp outside the replay window")
        expected = _mac(self.secret, method, target, timestamp, body_digest)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise PeerAuthFailed("bad signature")
        self._forget_before(now - self.window)
        if signature in self._seen:
            raise PeerAuthFailed("replayed request")
        self._seen[signature] = sent
        return body_digest

    def _forget_before(self, cutoff: float) -> None:
        if len(self._seen) > 1024 or (self._seen and min(self._seen.values()) < cutoff):
            self._seen = {s: t for s, t in self._seen.items() if t >= cutoff}


def load_or_create_secret(path: Path) -> bytes:
    """The cluster secret in `path` (hex), created with 0600 permissions when missing."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(SECRET_BYTES)
        fd = path.open("x")
        try:
            path.chmod(0o600)
            fd.write(text + "\n")
        finally:
            fd.close()
        return bytes.fromhex(text)
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < 16:
        raise ValueError(f"{path}: the cluster secret must be at least 16 bytes")
    return secret
