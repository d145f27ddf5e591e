"""Bearer tokens of the Docker registry token protocol: JWTs signed ES256 (pyjwt).

An access token names its subject (the account; empty for anonymous), the
service (`aud`) it is for, and exactly the actions it grants, per
repository (`access`, as the protocol lays it out); it lives `token_ttl`
seconds. A refresh token (what `docker login` keeps and containerd's OAuth
flow sends back) names only its subject and a short digest of the account's
stored secret hash (`pwv`), so a changed password or removed account ends it.

Keys live in the replicated state, each with an id (`kid` in the header):
every node signs with the current key and verifies with any key not yet
retired, so rotating the key logs nobody out before their token expires.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"
ISSUER = "flotilla"
ACCESS, REFRESH = "access", "refresh"
CATALOG = "registry:catalog"  # the key `access` gives the catalog scope
MAX_TOKEN_BYTES = 16 * 1024


class TokenRejected(Exception):
    """A token that is not valid here: its words say why, without repeating the token."""


@dataclass(frozen=True)
class SigningKeyView:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    retire_at: int | None

    @classmethod
    def load(cls, kid: str, private_pem: bytes, retire_at: int | None) -> SigningKeyView:
        key = serialization.load_pem_private_key(private_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(kid, key, retire_at)


def new_signing_key() -> tuple[str, bytes]:
    """A fresh P-256 key: its id and its PEM (what AddSigningKey carries)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = base64.b32encode(hashlib.sha256(public).digest()[:15]).decode().rstrip("=")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return kid, pem


def password_version(secret_hash: str) -> str:
    """A short digest of an account's stored hash: changes when the password does."""
    return hashlib.sha256(secret_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenClaims:
    kind: str
    subject: str
    expires_at: int
    issued_at: int
    access: Mapping[str, frozenset[str]] = field(default_factory=dict)  # repo → actions
    password_version: str | None = None


def issue(key: SigningKeyView, claims: TokenClaims, *, service: str) -> str:
    body: dict[str, object] = {
        "iss": ISSUER,
        "aud": service,
        "sub": claims.subject,
        "iat": claims.issued_at,
        "nbf": claims.issued_at - 1,
        "exp": claims.expires_at,
        "jti": secrets.token_urlsafe(12),
        "typ": claims.kind,
    }
    if claims.kind == ACCESS:
        body["access"] = [
            {"type": "registry", "name": "catalog", "actions": ["*"]} if name == CATALOG
            else {"type": "repository", "name": name, "actions": sorted(actions)}
            for name, actions in sorted(claims.access.items())
        ]
    else:
        body["pwv"] = claims.password_version
    return jwt.encode(body, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


def verify(token: str, keys: Mapping[str, SigningKeyView], *, service: str, now: float,
           kind: str = ACCESS) -> TokenClaims:
    """The claims of `token` if a live key of ours signed it for `service`, it has not
    expired and it is of `kind`; TokenRejected otherwise."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("the token is too long")
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        raise TokenRejected("the token is malformed") from None
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or (key.retire_at is not None and key.retire_at < now):
        raise TokenRejected("the token was not signed by a key of this registry")
    try:
        body = jwt.decode(
            token, key.private_key.public_key(), algorithms=[ALGORITHM], audience=service,
            issuer=ISSUER, leeway=5, options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("the token has expired") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("the token is for another service") from None
    except jwt.PyJWTError:
        raise TokenRejected("the token is not valid") from None
    if body.get("typ") != kind or not isinstance(body.get("sub"), str):
        raise TokenRejected(f"not an {kind} token")
    access: dict[str, frozenset[str]] = {}
    for entry in body.get("access") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("actions"), list):
            continue
        name = entry.get("name")
        actions = frozenset(a for a in entry["actions"] if isinstance(a, str))
        if entry.get("type") == "repository" and isinstance(name, str):
            access[name] = access.get(name, frozenset()) | actions
        elif entry.get("type") == "registry" and name == "catalog":
            access[CATALOG] = frozenset({"*"})
    pwv = body.get("pwv")
    return TokenClaims(
        kind=kind, subject=body["sub"], expires_at=int(body["exp"]),
        issued_at=int(body["iat"]), access=access,
        password_version=pwv if isinstance(pwv, str) else None,
    )
