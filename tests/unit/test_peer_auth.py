"""Signed internal requests: right secret, fresh, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cluster.auth import PeerAuthFailed, Verifier, load_or_create_secret, sign

SECRET = b"k" * 32


def test_signed_request_is_accepted_once() -> None:
    verifier = Verifier(SECRET)
    headers = sign(SECRET, "PUT", "/_cluster/chunks/ab", body_digest="abc", now=1000.0)
    assert verifier.verify("PUT", "/_cluster/chunks/ab", headers, now=1001.0) == "abc"
    with pytest.raises(PeerAuthFailed, match="replayed"):
        verifier.verify("PUT", "/_cluster/chunks/ab", headers, now=1002.0)


@pytest.mark.parametrize(
    ("method", "target", "secret", "skew"),
    [
        ("GET", "/_cluster/chunks/ab", SECRET, 0.0),  # other method
        ("PUT", "/_cluster/chunks/cd", SECRET, 0.0),  # other path
        ("PUT", "/_cluster/chunks/ab", b"x" * 32, 0.0),  # other secret
        ("PUT", "/_cluster/chunks/ab", SECRET, 60.0),  # too late
    ],
)
def test_tampered_foreign_or_stale_requests_are_refused(
    method: str, target: str, secret: bytes, skew: float
) -> None:
    headers = sign(secret, "PUT", "/_cluster/chunks/ab", now=1000.0)
    with pytest.raises(PeerAuthFailed):
        Verifier(SECRET).verify(method, target, headers, now=1000.0 + skew)


def test_changing_the_signed_body_digest_is_detected() -> None:
    headers = sign(SECRET, "PUT", "/x", body_digest="aaa", now=5.0)
    headers["X-Flotilla-Body-Digest"] = "bbb"
    with pytest.raises(PeerAuthFailed):
        Verifier(SECRET).verify("PUT", "/x", headers, now=5.0)


def test_missing_headers_are_refused() -> None:
    with pytest.raises(PeerAuthFailed):
        Verifier(SECRET).verify("GET", "/x", {})


def test_secret_file_is_created_private_and_reread(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == first
