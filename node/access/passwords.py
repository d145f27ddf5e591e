"""Stored secrets of accounts: password hashes for users, token digests for robots.

Users' passwords are hashed with argon2id (argon2-cffi); bcrypt hashes are
accepted as well, so an htpasswd file from Distribution imports as it is.
Robot tokens are 256 random bits, so a SHA-256 of them is as strong as any
slow hash and cheap to check on every request.

Docker sends Basic credentials with every request of a push, and an argon2
check costs tens of milliseconds of CPU by design, so a successful check is
remembered for a minute under a keyed BLAKE2b of name and password (the key
is this process's own, drawn at start) together with the stored hash it
matched: a changed password or removed account misses at once, and nothing
that could reveal the password is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import argon2
import bcrypt

from node.access.errors import AdminInputInvalid

ROBOT_TOKEN_PREFIX = "flr_"
# The most an argon2 hash handed in by an admin may cost per check (the defaults: 64 MiB,
# 3 passes, 4 lanes).
MAX_ARGON2_MEMORY_KIB, MAX_ARGON2_TIME, MAX_ARGON2_LANES = 256 * 1024, 10, 8
MAX_BCRYPT_COST = 14  # 2^14 rounds; htpasswd -B writes 5 by default, Distribution's docs 10+
ROBOT_HASH_PREFIX = "sha256:"
_hasher = argon2.PasswordHasher()  # argon2id, the library's (RFC 9106) defaults
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_HASH = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")  # cost, salt and digest


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def new_robot_token() -> str:
    return ROBOT_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_robot_token(token: str) -> str:
    return ROBOT_HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def check_stored_hash(stored: str, *, robot: bool) -> str:
    """A hash an admin hands over, if it is one this module can check."""
    if robot:
        ok = stored.startswith(ROBOT_HASH_PREFIX) and len(stored) == len(ROBOT_HASH_PREFIX) + 64
    elif len(stored) >= 512:
        ok = False
    elif stored.startswith("$argon2"):
        try:
            # A hash nobody could ever log in with is refused, and so is one whose cost
            # would make each login of that account a denial of service.
            cost = argon2.extract_parameters(stored)
            ok = (cost.memory_cost <= MAX_ARGON2_MEMORY_KIB and cost.time_cost <= MAX_ARGON2_TIME
                  and cost.parallelism <= MAX_ARGON2_LANES)
        except argon2.exceptions.InvalidHashError:
            ok = False
    else:
        ok = BCRYPT_HASH.fullmatch(stored) is not None and int(stored[4:6]) <= MAX_BCRYPT_COST
    if not ok:
        raise AdminInputInvalid(
            "the secret hash must be argon2 (at most 256 MiB, 10 passes, 8 lanes) or bcrypt "
            "(cost at most 14; robots: sha256:HEX)"
        )
    return stored


def secret_matches(stored: str, secret: str) -> bool:
    """Whether `secret` is what `stored` hashes; False for any malformed input."""
    if len(secret) > 1024:  # bounds the work a single guess may cost
        return False
    if stored.startswith(ROBOT_HASH_PREFIX):
        return hmac.compare_digest(stored, hash_robot_token(secret))
    try:
        if stored.startswith("$argon2"):
            return _hasher.verify(stored, secret)
        if stored.startswith(BCRYPT_PREFIXES):
            # Apache writes $2y$, which the bcrypt library reads as $2b$.
            return bcrypt.checkpw(secret.encode(), ("$2b$" + stored[4:]).encode())
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError,
            ValueError):
        return False
    return False


class VerifiedCache:
    """Recently verified (name, secret) pairs, by a keyed digest, for `ttl` seconds."""

    def __init__(self, ttl: float = 60.0, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._key = secrets.token_bytes(32)
        self._seen: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def _digest(self, name: str, secret: str) -> bytes:
        return hashlib.blake2b(f"{name}\0{secret}".encode(), key=self._key).digest()

    def hit(self, name: str, secret: str, stored: str) -> bool:
        entry = self._seen.get(self._digest(name, secret))
        return entry is not None and entry[0] == stored and entry[1] > self.clock()

    def remember(self, name: str, secret: str, stored: str) -> None:
        digest = self._digest(name, secret)
        self._seen[digest] = (stored, self.clock() + self.ttl)
        self._seen.move_to_end(digest)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


def parse_htpasswd(text: str) -> tuple[dict[str, str], list[str]]:
    """The bcrypt entries of an htpasswd file (name → hash), and the names skipped
    because their hash is of another kind (MD5, SHA-1, crypt) or their name unusable."""
    from node.access.rules import ACCOUNT_NAME_RE

    users: dict[str, str] = {}
    skipped: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if sep and stored.startswith(BCRYPT_PREFIXES) and ACCOUNT_NAME_RE.fullmatch(name):
            users[name] = stored
        else:
            skipped.append(name[:64])
    return users, skipped
