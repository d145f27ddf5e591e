"""Signed internal requests: right secret, fresh, for this node, once."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from node.cluster.auth import (
    ANY_NODE,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    PeerAuthFailed,
    SecretFileRefused,
    Verifier,
    load_or_create_secret,
    sign,
)

SECRET = b"k" * 32


def test_signed_request_is_accepted_once() -> None:
    verifier = Verifier(SECRET)
    headers = sign(SECRET, "PUT", "/_cluster/chunks/ab", node_id="n1", body_digest="abc",
                   now=1000.0)
    assert verifier.verify("PUT", "/_cluster/chunks/ab", headers, node_id="n1",
                           now=1001.0) == "abc"
    with pytest.raises(PeerAuthFailed, match="replayed"):
        verifier.verify("PUT", "/_cluster/chunks/ab", headers, node_id="n1", now=1002.0)


def test_two_requests_alike_in_method_path_and_millisecond_differ_and_each_is_accepted_once(
) -> None:
    verifier = Verifier(SECRET)
    first = sign(SECRET, "GET", "/_cluster/health", node_id="n1", now=1000.0)
    second = sign(SECRET, "GET", "/_cluster/health", node_id="n1", now=1000.0)
    assert first[SIGNATURE_HEADER] != second[SIGNATURE_HEADER]
    for headers in (first, second):
        verifier.verify("GET", "/_cluster/health", headers, node_id="n1", now=1000.0)
    for headers in (first, second):
        with pytest.raises(PeerAuthFailed, match="replayed"):
            verifier.verify("GET", "/_cluster/health", headers, node_id="n1", now=1000.0)


def test_request_signed_for_one_node_is_refused_by_another() -> None:
    n1, n2 = Verifier(SECRET), Verifier(SECRET)
    headers = sign(SECRET, "POST", "/_cluster/members", node_id="n1", now=1000.0)
    with pytest.raises(PeerAuthFailed, match="meant for node 'n1'"):
        n2.verify("POST", "/_cluster/members", headers, node_id="n2", now=1000.0)
    n1.verify("POST", "/_cluster/members", headers, node_id="n1", now=1000.0)


def test_changing_the_destination_breaks_the_signature() -> None:
    headers = sign(SECRET, "POST", "/_cluster/members", node_id="n1", now=1000.0)
    headers["X-Flotilla-Node"] = "n2"
    with pytest.raises(PeerAuthFailed, match="bad signature"):
        Verifier(SECRET).verify("POST", "/_cluster/members", headers, node_id="n2", now=1000.0)


def test_a_request_for_any_node_is_accepted_only_for_the_health_question() -> None:
    health = sign(SECRET, "GET", "/_cluster/health", node_id=ANY_NODE, now=1000.0)
    Verifier(SECRET).verify("GET", "/_cluster/health", health, node_id="n2", now=1000.0)
    for method, target in [("GET", "/_cluster/status"), ("POST", "/_cluster/members"),
                           ("DELETE", "/_cluster/members/n1"), ("POST", "/_cluster/health")]:
        headers = sign(SECRET, method, target, node_id=ANY_NODE, now=1000.0)
        with pytest.raises(PeerAuthFailed, match="meant for node"):
            Verifier(SECRET).verify(method, target, headers, node_id="n2", now=1000.0)


def test_a_replayed_nonce_is_refused_even_with_a_fresh_signature_from_elsewhere() -> None:
    verifier = Verifier(SECRET)
    headers = sign(SECRET, "GET", "/_cluster/status", node_id="n1", now=1000.0)
    verifier.verify("GET", "/_cluster/status", headers, node_id="n1", now=1000.0)
    with pytest.raises(PeerAuthFailed, match="replayed"):
        verifier.verify("GET", "/_cluster/status", headers, node_id="n1", now=1009.0)
    with pytest.raises(PeerAuthFailed, match="window"):
        verifier.verify("GET", "/_cluster/status", headers, node_id="n1", now=1011.0)


def test_remembered_nonces_stay_bounded_under_many_requests() -> None:
    verifier = Verifier(SECRET, max_nonces=500)
    sent = []
    for k in range(5000):
        headers = sign(SECRET, "GET", "/_cluster/health", node_id="n1", now=1000.0 + k / 1000)
        verifier.verify("GET", "/_cluster/health", headers, node_id="n1", now=1005.0)
        sent.append(headers)
        assert verifier.remembered <= 500
    # Forgotten for room, never let through: the oldest can no longer be told from a replay.
    with pytest.raises(PeerAuthFailed, match="replay"):
        verifier.verify("GET", "/_cluster/health", sent[0], node_id="n1", now=1005.0)
    with pytest.raises(PeerAuthFailed, match="replayed"):
        verifier.verify("GET", "/_cluster/health", sent[-1], node_id="n1", now=1005.0)
    fresh = sign(SECRET, "GET", "/_cluster/health", node_id="n1", now=1005.0)
    verifier.verify("GET", "/_cluster/health", fresh, node_id="n1", now=1005.0)
    # Once the window has passed them, the old nonces are forgotten by time.
    later = sign(SECRET, "GET", "/_cluster/health", node_id="n1", now=1100.0)
    verifier.verify("GET", "/_cluster/health", later, node_id="n1", now=1100.0)
    assert verifier.remembered == 1


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_non_finite_timestamps_are_refused(when: float) -> None:
    headers = sign(SECRET, "GET", "/_cluster/status", node_id="n1", now=when)
    with pytest.raises(PeerAuthFailed, match="window"):
        Verifier(SECRET).verify("GET", "/_cluster/status", headers, node_id="n1", now=1000.0)


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
    headers = sign(secret, "PUT", "/_cluster/chunks/ab", node_id="n1", now=1000.0)
    with pytest.raises(PeerAuthFailed):
        Verifier(SECRET).verify(method, target, headers, node_id="n1", now=1000.0 + skew)


def test_changing_the_signed_body_digest_or_nonce_is_detected() -> None:
    for header, value in [("X-Flotilla-Body-Digest", "bbb"), (NONCE_HEADER, "0" * 32)]:
        headers = sign(SECRET, "PUT", "/x", node_id="n1", body_digest="aaa", now=5.0)
        headers[header] = value
        with pytest.raises(PeerAuthFailed, match="bad signature"):
            Verifier(SECRET).verify("PUT", "/x", headers, node_id="n1", now=5.0)


def test_missing_headers_are_refused() -> None:
    with pytest.raises(PeerAuthFailed):
        Verifier(SECRET).verify("GET", "/x", {}, node_id="n1")
    headers = sign(SECRET, "GET", "/x", node_id="n1")
    del headers[NONCE_HEADER]
    with pytest.raises(PeerAuthFailed, match="nonce"):
        Verifier(SECRET).verify("GET", "/x", headers, node_id="n1")


def test_secret_file_is_created_private_and_reread(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == first


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    load_or_create_secret(path)
    path.chmod(mode)
    with pytest.raises(SecretFileRefused, match=f"{path}.*mode {mode:04o}"):
        load_or_create_secret(path)
