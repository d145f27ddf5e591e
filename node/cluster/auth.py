"""Proof of the cluster secret on the internal HTTP API (`/_cluster/…`).

Every internal request carries a timestamp, a random nonce, the id of the
node it is meant for, and an HMAC-SHA256, under the cluster secret, of the
method, the path with its query, those three and the digest of the body
(empty when there is none). A node accepts a request only when the MAC is
right, the timestamp is a finite number within a few seconds of its own
clock, the request names this node, and its nonce was not seen before in the
window. So two requests alike in every other way still differ, and a captured
request can be played neither again nor to another node. The secret itself
never travels.

Who a request is for. Peers know each other's ids from the replicated member
list and sign for exactly that node. The admin CLI and `--join` start from a
URL and do not know who answers there; they first ask `GET /_cluster/health`
signed for "*" (any node), which answers the node's id, and sign everything
after that for the id they got. "*" is accepted for that one read-only request
and nothing else: replaying it to every node tells the replayer only node ids,
which every status answer lists anyway.

Remembered nonces are kept until their timestamp leaves the window, and at
most `MAX_NONCES` of them. Should the cap be reached, the oldest is forgotten
and from then on requests no newer than it are refused: a replay is never let
through for lack of memory, and honest requests, whose timestamps are fresh,
are not affected. The memory is the process's: a node restarted within the
window forgets what it saw.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from node.cluster.errors import PeerAuthFailed
from node.config import ConfigError

TIME_HEADER = "X-Flotilla-Time"
NONCE_HEADER = "X-Flotilla-Nonce"
NODE_HEADER = "X-Flotilla-Node"
BODY_HEADER = "X-Flotilla-Body-Digest"
SIGNATURE_HEADER = "X-Flotilla-Signature"
REPLAY_WINDOW = 10.0
MAX_NONCES = 65536
NONCE_BYTES = 16
SECRET_BYTES = 32
ANY_NODE = "*"
# The only requests a node accepts when signed for ANY_NODE.
ANY_NODE_REQUESTS = frozenset({("GET", "/_cluster/health")})

_NONCE = re.compile(f"[0-9a-f]{{{2 * NONCE_BYTES}}}")


class SecretFileRefused(ConfigError):
    """The cluster secret file is unsafe or unusable; the node must not start with it."""


def _mac(secret: bytes, *fields: str) -> str:
    # Each field is prefixed with its length, so no field can borrow from its neighbour.
    message = "".join(f"{len(field)}:{field}\n" for field in fields).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(
    secret: bytes, method: str, target: str, *, node_id: str, body_digest: str = "",
    now: float | None = None,
) -> dict[str, str]:
    """Headers that prove the secret for one request to `target` (path and query) on
    node `node_id` (ANY_NODE only for the requests in ANY_NODE_REQUESTS)."""
    timestamp = f"{time.time() if now is None else now:.3f}"
    nonce = secrets.token_hex(NONCE_BYTES)
    headers = {
        TIME_HEADER: timestamp,
        NONCE_HEADER: nonce,
        NODE_HEADER: node_id,
        SIGNATURE_HEADER: _mac(
            secret, method.upper(), target, timestamp, nonce, node_id, body_digest
        ),
    }
    if body_digest:
        headers[BODY_HEADER] = body_digest
    return headers


class Verifier:
    """Checks signed requests meant for this node and remembers recent nonces to refuse
    replays, in bounded memory."""

    def __init__(
        self, secret: bytes, *, window: float = REPLAY_WINDOW, max_nonces: int = MAX_NONCES
    ) -> None:
        self.secret = secret
        self.window = window
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}  # nonce -> its request's timestamp
        self._by_time: list[tuple[float, str]] = []  # the same, as a heap, oldest first
        self._floor = -math.inf  # requests this old or older can no longer be checked

    @property
    def remembered(self) -> int:
        """How many nonces this verifier holds right now."""
        return len(self._seen)

    def verify(
        self, method: str, target: str, headers: Mapping[str, str], *, node_id: str,
        now: float | None = None,
    ) -> str:
        """Accept a request for node `node_id` or raise PeerAuthFailed; returns the signed
        body digest ('' if none)."""
        now = time.time() if now is None else now
        timestamp = headers.get(TIME_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        destination = headers.get(NODE_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        body_digest = headers.get(BODY_HEADER, "")
        try:
            sent = float(timestamp)
        except ValueError:
            raise PeerAuthFailed("missing or malformed timestamp") from None
        if not math.isfinite(sent) or abs(now - sent) > self.window:
            raise PeerAuthFailed("timestamp outside the replay window")
        if not _NONCE.fullmatch(nonce):
            raise PeerAuthFailed("missing or malformed nonce")
        expected = _mac(
            self.secret, method.upper(), target, timestamp, nonce, destination, body_digest
        )
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise PeerAuthFailed("bad signature")
        if destination != node_id and not (
            destination == ANY_NODE and (method.upper(), target) in ANY_NODE_REQUESTS
        ):
            raise PeerAuthFailed(f"request meant for node {destination[:64]!r}")
        self._forget_before(now - self.window)
        if sent <= self._floor:
            raise PeerAuthFailed("too old to tell from a replay")
        if nonce in self._seen:
            raise PeerAuthFailed("replayed request")
        self._remember(nonce, sent)
        return body_digest

    def _remember(self, nonce: str, sent: float) -> None:
        self._seen[nonce] = sent
        heapq.heappush(self._by_time, (sent, nonce))
        while len(self._seen) > self.max_nonces:
            oldest, forgotten = heapq.heappop(self._by_time)
            del self._seen[forgotten]
            self._floor = max(self._floor, oldest)

    def _forget_before(self, cutoff: float) -> None:
        # A request older than the window is refused by its timestamp alone.
        while self._by_time and self._by_time[0][0] < cutoff:
            _, nonce = heapq.heappop(self._by_time)
            del self._seen[nonce]


def _read_secret(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o066:
            raise SecretFileRefused(
                f"{path}: the cluster secret is readable or writable by group or others "
                f"(mode {mode & 0o777:04o}); run chmod 600 {path}"
            )
        with os.fdopen(fd, closefd=False) as f:
            text = f.read().strip()
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < 16:
        raise SecretFileRefused(f"{path}: the cluster secret must be at least 16 bytes")
    return secret


def load_or_create_secret(path: Path) -> bytes:
    """The cluster secret in `path` (hex), created with 0600 permissions when missing.
    SecretFileRefused when an existing file is open to group or others, or too short."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(SECRET_BYTES)
    try:
        # Private from its first byte: created 0600, never widened by a later chmod.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)  # another process created it first
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return bytes.fromhex(text)
