"""Stored secrets and how they are checked: argon2 passwords, bcrypt hashes as htpasswd
writes them, robot tokens, the cache of recent checks, htpasswd import, and the tokens
the endpoint signs (expired, for another service, by another key, of another kind)."""

from __future__ import annotations

import time

import argon2
import bcrypt
import jwt
import pytest

from node.access.errors import AdminInputInvalid
from node.access.passwords import (
    ROBOT_TOKEN_PREFIX,
    VerifiedCache,
    check_stored_hash,
    hash_password,
    hash_robot_token,
    new_robot_token,
    parse_htpasswd,
    secret_matches,
)
from node.access.tokens import (
    ACCESS,
    REFRESH,
    SigningKeyView,
    TokenClaims,
    TokenRejected,
    issue,
    new_signing_key,
    password_version,
    verify,
)


def apache_bcrypt(password: str) -> str:
    """What `htpasswd -B` writes: bcrypt under Apache's `$2y$` prefix."""
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()[4:]


def test_an_argon2_password_checks_and_a_wrong_one_does_not() -> None:
    stored = hash_password("hunter2")
    assert stored.startswith("$argon2id$")
    assert "hunter2" not in stored
    assert secret_matches(stored, "hunter2")
    assert not secret_matches(stored, "hunter3")
    assert not secret_matches(stored, "")


@pytest.mark.parametrize("prefix", ["$2y$", "$2b$", "$2a$"])
def test_bcrypt_hashes_check_whatever_their_prefix(prefix: str) -> None:
    stored = prefix + apache_bcrypt("from distribution")[4:]
    assert secret_matches(stored, "from distribution")
    assert not secret_matches(stored, "from elsewhere")


def test_a_robot_token_checks_against_its_sha256() -> None:
    token = new_robot_token()
    assert token.startswith(ROBOT_TOKEN_PREFIX) and len(token) > 40
    assert new_robot_token() != token
    stored = hash_robot_token(token)
    assert stored.startswith("sha256:") and token not in stored
    assert secret_matches(stored, token)
    assert not secret_matches(stored, token + "x")


@pytest.mark.parametrize("stored", ["", "plain", "$argon2id$broken", "$2y$broken",
                                    "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "$apr1$x$y"])
def test_malformed_or_foreign_stored_hashes_never_match(stored: str) -> None:
    assert not secret_matches(stored, "password")


def test_an_overlong_secret_is_refused_without_hashing() -> None:
    stored = hash_robot_token("x" * 2000)
    assert not secret_matches(stored, "x" * 2000)


def test_only_hashes_that_can_be_checked_are_stored() -> None:
    assert check_stored_hash(hash_password("pw"), robot=False)
    assert check_stored_hash(apache_bcrypt("pw"), robot=False)
    assert check_stored_hash(hash_robot_token("t"), robot=True)
    for stored, robot in [("plain", False), ("$apr1$x$y", False), (hash_robot_token("t"), False),
                          (hash_password("pw"), True), ("sha256:abc", True)]:
        with pytest.raises(AdminInputInvalid):
            check_stored_hash(stored, robot=robot)


def test_a_hash_that_would_make_every_login_of_its_account_costly_is_refused() -> None:
    slow_argon2 = argon2.PasswordHasher(time_cost=50, memory_cost=1024).hash("pw")
    slow_bcrypt = "$2b$20$" + apache_bcrypt("pw")[7:]  # the same salt and digest, cost 2^20
    for stored in (slow_argon2, slow_bcrypt):
        with pytest.raises(AdminInputInvalid):
            check_stored_hash(stored, robot=False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_password_is_remembered_for_its_ttl_and_its_stored_hash_only() -> None:
    clock = Clock()
    cache = VerifiedCache(ttl=60, clock=clock)
    cache.remember("alice", "pw", "$argon2id$one")
    assert cache.hit("alice", "pw", "$argon2id$one")
    assert not cache.hit("alice", "other", "$argon2id$one")
    assert not cache.hit("bob", "pw", "$argon2id$one")
    assert not cache.hit("alice", "pw", "$argon2id$two")  # the password changed since
    clock.now = 61
    assert not cache.hit("alice", "pw", "$argon2id$one")


def test_the_verified_cache_is_bounded() -> None:
    cache = VerifiedCache(ttl=60, size=2, clock=Clock())
    for name in ("a", "b", "c"):
        cache.remember(name, "pw", "h")
    assert not cache.hit("a", "pw", "h")
    assert cache.hit("b", "pw", "h") and cache.hit("c", "pw", "h")


def test_htpasswd_import_keeps_bcrypt_entries_and_names_the_rest() -> None:
    alice, bob = apache_bcrypt("alice pw"), "$2b$" + apache_bcrypt("bob pw")[4:]
    text = "\n".join([
        "# users moved from Distribution",
        f"alice:{alice}",
        "",
        f"bob:{bob}",
        "carol:$apr1$salt$md5hashhashhash",
        "dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "erin:abCRYPT0123",
        f"Not A Name:{alice}",
        "no separator at all",
    ])
    users, skipped = parse_htpasswd(text)
    assert users == {"alice": alice, "bob": bob}
    assert skipped == ["carol", "dave", "erin", "Not A Name", "no separator at all"]
    assert secret_matches(users["alice"], "alice pw")


# -- tokens -------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> SigningKeyView:
    return SigningKeyView.load(*new_signing_key(), None)


def access_claims(now: int, ttl: int = 300) -> TokenClaims:
    return TokenClaims(ACCESS, "alice", now + ttl, now, {"team/app": frozenset({"pull"})})


def test_a_token_verifies_with_its_key_and_lists_its_access(key: SigningKeyView) -> None:
    now = int(time.time())
    token = issue(key, access_claims(now), service="flotilla")
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    claims = verify(token, {key.kid: key}, service="flotilla", now=now)
    assert claims.subject == "alice"
    assert claims.access == {"team/app": {"pull"}}


def test_tokens_that_are_not_valid_here_are_rejected(key: SigningKeyView) -> None:
    now = int(time.time())
    keys = {key.kid: key}
    other = SigningKeyView.load(*new_signing_key(), None)
    cases = {
        "the token has expired": issue(key, access_claims(now - 400), service="flotilla"),
        "the token is for another service": issue(key, access_claims(now), service="other"),
        "the token was not signed by a key of this registry":
            issue(other, access_claims(now), service="flotilla"),
        "the token is malformed": "not.a.jwt",
        "the token is too long": "x" * 20_000,
    }
    for reason, token in cases.items():
        with pytest.raises(TokenRejected, match=reason):
            verify(token, keys, service="flotilla", now=now)


def test_a_retired_key_no_longer_verifies(key: SigningKeyView) -> None:
    now = int(time.time())
    retired = SigningKeyView(key.kid, key.private_key, retire_at=now - 1)
    token = issue(key, access_claims(now), service="flotilla")
    with pytest.raises(TokenRejected):
        verify(token, {key.kid: retired}, service="flotilla", now=now)
    kept = SigningKeyView(key.kid, key.private_key, retire_at=now + 3600)
    assert verify(token, {key.kid: kept}, service="flotilla", now=now).subject == "alice"


def test_a_refresh_token_is_not_an_access_token_nor_the_other_way(key: SigningKeyView) -> None:
    now = int(time.time())
    refresh = issue(key, TokenClaims(REFRESH, "alice", now + 3600, now,
                                     password_version=password_version("$argon2id$h")),
                    service="flotilla")
    access = issue(key, access_claims(now), service="flotilla")
    keys = {key.kid: key}
    with pytest.raises(TokenRejected):
        verify(refresh, keys, service="flotilla", now=now, kind=ACCESS)
    with pytest.raises(TokenRejected):
        verify(access, keys, service="flotilla", now=now, kind=REFRESH)
    claims = verify(refresh, keys, service="flotilla", now=now, kind=REFRESH)
    assert claims.password_version == password_version("$argon2id$h")
    assert password_version("$argon2id$h") != password_version("$argon2id$other")
