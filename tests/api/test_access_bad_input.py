"""Malformed credentials, tokens, token requests and admin requests on a node with auth = token.

Every one gets a 4xx with the OCI error envelope, never a 500 or a traceback,
never an echo of the credential it carried, and the node goes on serving the
next, well-formed request. Cases are grouped per endpoint and each group runs
against one node, so a failure lists every case of the group that went wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from node.access.passwords import hash_password
from node.app import RunningNode, serve
from node.cluster.client import signed_headers
from node.config import Config
from tests.api.content import assert_envelope
from tests.secret_scan import SecretsSeen


@dataclass
class TokenNode:
    node: RunningNode
    client: httpx.AsyncClient
    admin: tuple[str, str]  # an admin account's Basic credentials
    user: tuple[str, str]  # a writer on team/*

    async def admin_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, f"/admin/{path}", auth=self.admin, **kwargs)

    async def serves(self) -> None:
        """The node still answers a well-formed request as it should."""
        response = await self.client.get("/v2/", auth=self.user)
        assert response.status_code == 200, response.text
        token = await self.client.get("/token", auth=self.user, params={
            "service": "flotilla", "scope": "repository:team/app:pull"})
        assert token.status_code == 200, token.text


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_text(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(body).encode()),
                     b64url(signature)])


@pytest.fixture
async def token_node(tmp_path: Path, nursery: trio.Nursery,
                     secrets_seen: SecretsSeen) -> AsyncIterator[TokenNode]:
    config = Config(data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024,
                    tick_ms=2, auth="token", login_failures=1000)
    node = await nursery.start(serve, config)
    admin = ("root", secrets_seen.add_login("root", "pw-" + secrets.token_urlsafe(18)))
    user = ("alice", secrets_seen.add_login("alice", "pw-" + secrets.token_urlsafe(18)))
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        url = f"{node.url}/admin/accounts"
        for (name, password), role in ((admin, "admin"), (user, None)):
            body = json.dumps({"name": name, "password_hash": hash_password(password),
                               **({"role": role} if role else {})}).encode()
            headers = signed_headers(node.services.secret, "POST", url, body, node_id="n1")
            made = await client.post(url, content=body, headers={
                **headers, "Content-Type": "application/json"})
            assert made.status_code == 201, made.text
        grant = await client.post("/admin/grants", auth=admin, json={
            "principal": "alice", "role": "writer", "pattern": "team/*"})
        assert grant.status_code == 201, grant.text
        yield TokenNode(node, client, admin, user)
    node.cancel_scope.cancel()


async def assert_refused(cases: list[tuple[str, Any]], *,
                         expect: Callable[[httpx.Response], None] | None = None,
                         leaks: tuple[str, ...] = ()) -> None:
    """Each case answered with a 4xx and the error envelope (and `expect`), never echoing
    one of `leaks`; fails listing every case that broke that promise."""
    broken = []
    for what, request in cases:
        try:
            response = await request
        except httpx.HTTPError as exc:  # the node hung up instead of answering
            broken.append(f"{what}: {type(exc).__name__}")
            continue
        try:
            assert 400 <= response.status_code < 500, response.status_code
            assert_envelope(response)
            if expect is not None:
                expect(response)
            assert not [s for s in leaks if s in response.text], "a credential echoed"
        except AssertionError as exc:
            broken.append(f"{what}: {response.status_code} {exc} {response.text[:200]}")
    assert not broken, "\n".join(["cases that broke the promise:", *broken])


def challenged(response: httpx.Response) -> None:
    """401 UNAUTHORIZED with the challenge that says how to log in."""
    assert response.status_code == 401, response.status_code
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert response.headers.get("WWW-Authenticate", "").startswith(("Bearer ", "Basic ")), \
        response.headers


async def test_malformed_authorization_headers_are_401_and_the_node_serves_on(
    token_node: TokenNode,
) -> None:
    client = token_node.client
    _, password = token_node.user
    values: list[tuple[str, str | bytes]] = [
        ("garbage base64", "Basic !!!not-base64!!!"),
        ("base64 with no colon", "Basic " + b64(b"alice" + password.encode())),
        ("an empty name", "Basic " + b64(b":" + password.encode())),
        ("Basic alone", "Basic"),
        ("padding only", "Basic ===="),
        ("non-UTF-8 inside base64", "Basic " + b64(b"alice:\xff\xfe\xfd")),
        ("non-UTF-8 name inside base64", "Basic " + b64(b"\xc3\x28:" + password.encode())),
        ("non-UTF-8 header bytes", b"Basic \xff\xfe\xfd\xfc"),
        ("a huge Basic value", "Basic " + b64(b"alice:" + b"p" * 40_000)),
        ("a huge name", "Basic " + b64(b"a" * 30_000 + b":" + password.encode())),
        ("an unknown scheme", "Digest username=alice, realm=flotilla"),
        ("another unknown scheme", "Negotiate " + b64(b"x" * 64)),
        ("a scheme alone", "Frobnicate"),
        ("Bearer alone", "Bearer"),
        ("two credentials", "Basic " + b64(b"alice:x") + ", Basic " + b64(b"bob:y")),
    ]
    cases = []
    for what, value in values:
        for path in ("/v2/", "/v2/team/app/tags/list", "/token"):
            cases.append((f"{what} on {path}",
                          client.get(path, headers={"Authorization": value})))
    await assert_refused(cases, expect=challenged, leaks=(password,))
    await token_node.serves()


async def test_a_request_head_past_the_size_limit_is_refused_and_the_node_serves_on(
    token_node: TokenNode,
) -> None:
    # Past 64 KiB of request head the HTTP server refuses it before any handler runs, so
    # this answer has no error body: the one case here without the envelope.
    value = "Basic " + b64(b"alice:" + b"p" * 100_000)
    response = await token_node.client.get("/v2/", headers={"Authorization": value})
    assert response.status_code == 431, response.status_code
    await token_node.serves()


async def test_malformed_tokens_are_401_and_the_node_serves_on(token_node: TokenNode) -> None:
    client = token_node.client
    good = (await client.get("/token", auth=token_node.user, params={
        "service": "flotilla", "scope": "repository:team/app:pull,push",
        "offline_token": "true"})).json()
    kid = jwt.get_unverified_header(good["token"])["kid"]
    claims = jwt.decode(good["token"], options={"verify_signature": False})
    key = token_node.node.services.gate.view().keys[kid].private_key.public_key()
    public_pem = key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    hs_input = ".".join(jwt_text(hs_header, claims).split(".")[:2]).encode()
    hs256_with_public_key = hs_input.decode() + "." + b64url(
        hmac.new(public_pem, hs_input, hashlib.sha256).digest())
    head, body, signature = good["token"].split(".")
    tokens = [
        ("three garbage parts", "abc.def.ghi"),
        ("three parts of symbols", "!!!.???.###"),
        ("one part", "eyJhbGciOiJFUzI1NiJ9"),
        ("two parts", f"{head}.{body}"),
        ("four parts", f"{head}.{body}.{signature}.{signature}"),
        ("alg none", jwt_text({"alg": "none", "typ": "JWT", "kid": kid}, claims)),
        ("alg none, no kid", jwt_text({"alg": "none"}, claims)),
        ("HS256 keyed with the public key", hs256_with_public_key),
        ("a kid that is a number", jwt_text({"alg": "ES256", "kid": 7}, claims, b"x" * 64)),
        ("an unknown kid", jwt_text({"alg": "ES256", "kid": "NOPE"}, claims, b"x" * 64)),
        ("another body under the signature", jwt_text(
            {"alg": "ES256", "kid": kid}, {**claims, "sub": "root"}) [: -1] + signature),
        ("a flipped signature", f"{head}.{body}.{signature[::-1]}"),
        ("huge", "a" * 20_000 + "." + "b" * 20_000 + ".c"),
        ("a header that is not JSON", b64url(b"{{{") + f".{body}.{signature}"),
        ("a refresh token used for access", good["refresh_token"]),
        ("not ASCII", "ÿÿÿ.ÿÿÿ.ÿÿÿ".encode("latin-1")),
    ]
    cases = [
        (f"{what} on {path}", client.get(path, headers={"Authorization": b"Bearer " + (
            value if isinstance(value, bytes) else value.encode())}))
        for what, value in tokens for path in ("/v2/", "/v2/team/app/tags/list")
    ]
    await assert_refused(cases, expect=challenged)
    await token_node.serves()


async def test_garbage_scopes_get_a_token_that_grants_nothing(token_node: TokenNode) -> None:
    client = token_node.client
    scopes = ["garbage", "repository", "repository::", "repository:team/app",
              "repository:Team/App:pull", "repository:team/app:fly", ":::", "registry:x:*",
              "repository:" + "a" * 5000 + ":pull", "repository:team/../app:pull",
              "repository:team/app:pull:push", "\x00\x01", "repository:tëam/app:pull", "x" * 50_000]
    for scope in scopes:
        response = await client.get("/token", auth=token_node.user,
                                    params={"service": "flotilla", "scope": scope})
        assert response.status_code == 200, (scope, response.text)
        access = jwt.decode(response.json()["token"],
                            options={"verify_signature": False}).get("access")
        assert access in ([], None), (scope, access)
    many = await client.get("/token", auth=token_node.user, params=[
        ("service", "flotilla"), *[("scope", f"repository:team/r{i}:pull") for i in range(500)]])
    assert many.status_code == 200, many.text
    listed = jwt.decode(many.json()["token"], options={"verify_signature": False})["access"]
    assert len(listed) <= 64, "scopes past the cap are not granted"
    await token_node.serves()


async def test_malformed_token_requests_are_4xx_and_the_node_serves_on(
    token_node: TokenNode,
) -> None:
    client = token_node.client
    name, password = token_node.user
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    def post(body: bytes, headers: dict[str, str] | None = None) -> Any:
        return client.post("/token", content=body, headers=headers or form)

    many_fields = "&".join(f"f{i}=x" for i in range(1000)).encode()
    cases = [
        ("an unknown grant_type", post(b"grant_type=magic&username=alice")),
        ("no grant_type", post(b"username=alice&password=x")),
        ("an empty form", post(b"")),
        ("a form that is not UTF-8", post(b"grant_type=password&username=\xff\xfe&password=x")),
        ("a password that is not UTF-8", post(b"grant_type=password&username=alice&password="
                                              b"\xc3\x28")),
        ("a huge form", post(b"grant_type=password&password=" + b"x" * 200_000)),
        ("a form of a thousand fields", post(many_fields)),
        ("a JSON body", post(json.dumps({"grant_type": "password", "username": name,
                                          "password": password}).encode(),
                             {"Content-Type": "application/json"})),
        ("a wrong password", post(f"grant_type=password&username={name}&password=nope".encode())),
        ("an unknown user", post(b"grant_type=password&username=nobody&password=whatever")),
        ("a garbage refresh token", post(b"grant_type=refresh_token&refresh_token=abc.def.ghi")),
        ("a huge refresh token", post(b"grant_type=refresh_token&refresh_token=" + b"a" * 60_000)),
        ("another service", post(f"grant_type=password&username={name}&password={password}"
                                 "&service=elsewhere".encode())),
        ("GET for another service", client.get("/token", auth=token_node.user,
                                               params={"service": "elsewhere"})),
        ("a PUT", client.put("/token", content=b"x")),
        ("a DELETE", client.delete("/token")),
    ]
    await assert_refused(cases, leaks=(password,))
    await token_node.serves()


async def test_malformed_admin_requests_are_4xx_and_the_node_serves_on(
    token_node: TokenNode,
) -> None:
    node = token_node
    good_hash = hash_password("pw-" + secrets.token_urlsafe(18))

    def account(doc: Any) -> Any:
        return node.admin_request("POST", "accounts", json=doc)

    def raw(method: str, path: str, body: bytes) -> Any:
        return node.admin_request(method, path, content=body,
                                  headers={"Content-Type": "application/json"})

    cases = [
        ("a body that is not JSON", raw("POST", "accounts", b"{not json")),
        ("a body that is not UTF-8", raw("POST", "accounts", b"\xff\xfe{}")),
        ("a JSON list", raw("POST", "accounts", b"[]")),
        ("JSON null", raw("POST", "accounts", b"null")),
        ("a JSON string", raw("POST", "accounts", b'"alice"')),
        ("deeply nested JSON", raw("POST", "accounts", b"[" * 100_000 + b"]" * 100_000)),
        ("a huge body", raw("POST", "accounts", b'{"name": "' + b"a" * (5 << 20) + b'"}')),
        ("a name that is a number", account({"name": 5, "password_hash": good_hash})),
        ("a name that is a list", account({"name": ["a"], "password_hash": good_hash})),
        ("no name", account({"password_hash": good_hash})),
        ("an upper-case name", account({"name": "Alice2", "password_hash": good_hash})),
        ("a name with a slash", account({"name": "a/b", "password_hash": good_hash})),
        ("a name of 100 characters", account({"name": "a" * 100, "password_hash": good_hash})),
        ("an empty name", account({"name": "", "password_hash": good_hash})),
        ("no hash", account({"name": "bob"})),
        ("a plain-text password as the hash", account({"name": "bob", "password_hash": "x" * 12})),
        ("a hash that is a number", account({"name": "bob", "password_hash": 12})),
        ("a huge argon2-looking hash", account({"name": "bob",
                                                "password_hash": "$argon2id$" + "x" * 1000})),
        ("an argon2 prefix and garbage", account({"name": "bob",
                                                  "password_hash": "$argon2id$garbage"})),
        ("a bcrypt prefix and garbage", account({"name": "bob", "password_hash": "$2b$junk"})),
        ("an md5 htpasswd hash", account({"name": "bob",
                                          "password_hash": "$apr1$abc$0123456789abcdefghij"})),
        ("a role that is not one", account({"name": "bob", "password_hash": good_hash,
                                            "role": "superuser"})),
        ("a role that is a number", account({"name": "bob", "password_hash": good_hash,
                                             "role": 5})),
        ("a role that is a list", account({"name": "bob", "password_hash": good_hash,
                                           "role": ["admin"]})),
        ("expires_at a string", account({"name": "bob", "password_hash": good_hash,
                                         "expires_at": "tomorrow"})),
        ("expires_at negative", account({"name": "bob", "password_hash": good_hash,
                                         "expires_at": -1})),
        ("expires_at true", account({"name": "bob", "password_hash": good_hash,
                                     "expires_at": True})),
        ("expires_at past 64 bits", account({"name": "bob", "password_hash": good_hash,
                                             "expires_at": 10**30})),
        ("expires_at a float", account({"name": "bob", "password_hash": good_hash,
                                        "expires_at": 1.5e9})),
        ("an existing account", account({"name": "alice", "password_hash": good_hash})),
        ("a grant without a principal", node.admin_request("POST", "grants", json={
            "role": "writer", "pattern": "team/*"})),
        ("a grant to a bad name", node.admin_request("POST", "grants", json={
            "principal": "Bad Name", "role": "writer", "pattern": "team/*"})),
        ("a grant of a bad role", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": "owner", "pattern": "team/*"})),
        ("a grant of a role that is an object", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": {"r": 1}, "pattern": "team/*"})),
        ("an upper-case pattern", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": "writer", "pattern": "Team/*"})),
        ("a pattern with brackets", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": "writer", "pattern": "team/[ab]"})),
        ("a pattern with dots", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": "writer", "pattern": "team/../x"})),
        ("a pattern of 300 characters", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": "writer", "pattern": "a" * 300})),
        ("a pattern that is a number", node.admin_request("POST", "grants", json={
            "principal": "alice", "role": "writer", "pattern": 3})),
        ("a revoke without arguments", node.admin_request("DELETE", "grants")),
        ("a revoke of a bad pattern", node.admin_request(
            "DELETE", "grants", params={"principal": "alice", "pattern": "A//B"})),
        ("a revoke of a grant nobody has", node.admin_request(
            "DELETE", "grants", params={"principal": "alice", "pattern": "nothing/*"})),
        ("a public pattern with a space", node.admin_request("POST", "public", json={
            "pattern": "lib rary/*"})),
        ("a public pattern that is null", node.admin_request("POST", "public", json={
            "pattern": None})),
        ("removing a bad public pattern", node.admin_request(
            "DELETE", "public", params={"pattern": "%%%"})),
        ("removing a bad account name", node.admin_request("DELETE", "accounts/Bad!Name")),
        ("removing an unknown account", node.admin_request("DELETE", "accounts/nobody")),
        ("a password change to a bad hash", node.admin_request(
            "PUT", "accounts/alice/password", json={"password_hash": "plain"})),
        ("a password change of an unknown user", node.admin_request(
            "PUT", "accounts/nobody/password", json={"password_hash": good_hash})),
        ("an import that is a list", node.admin_request("POST", "accounts/import",
                                                        json={"users": []})),
        ("an import of a number hash", node.admin_request("POST", "accounts/import",
                                                          json={"users": {"carl": 5}})),
        ("an import of a bad name", node.admin_request("POST", "accounts/import", json={
            "users": {"Carl!": "$2b$12$" + "a" * 53}})),
        ("an import of an md5 hash", node.admin_request("POST", "accounts/import", json={
            "users": {"carl": "$apr1$abc$0123456789abcdefghij"}})),
        ("an unknown admin path", node.admin_request("GET", "frobs")),
        ("an unknown method", node.admin_request("PATCH", "accounts", json={})),
        ("a path of many parts", node.admin_request("GET", "accounts/a/b/c/d/e")),
        ("no credentials", node.client.get("/admin/accounts")),
        ("a user that is not an admin", node.client.get("/admin/accounts",
                                                         auth=node.user)),
        ("a wrong admin password", node.client.get("/admin/accounts",
                                                   auth=(node.admin[0], "wrong-password"))),
        ("a forged secret signature", node.client.get("/admin/accounts", headers=signed_headers(
            secrets.token_bytes(32), "GET", f"{node.node.url}/admin/accounts", node_id="n1"))),
        ("a signature over another body", node.client.post(
            "/admin/accounts", content=b'{"name": "mallory", "role": "admin"}',
            headers=signed_headers(node.node.services.secret, "POST",
                                   f"{node.node.url}/admin/accounts", b"{}", node_id="n1"))),
    ]
    await assert_refused(cases, leaks=(node.admin[1], node.user[1]))
    listed = (await node.admin_request("GET", "accounts")).json()["accounts"]
    assert sorted(a["name"] for a in listed) == ["alice", "root"], "nothing bad was stored"
    await node.serves()


async def test_whole_argon2_and_htpasswd_bcrypt_hashes_are_still_taken(
    token_node: TokenNode, secrets_seen: SecretsSeen
) -> None:
    password = secrets_seen.add_login("carl", "pw-" + secrets.token_urlsafe(18))
    apache = "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()[4:]
    imported = await token_node.admin_request("POST", "accounts/import",
                                              json={"users": {"carl": apache}})
    assert imported.status_code == 200 and imported.json()["added"] == ["carl"], imported.text
    login = await token_node.client.get("/v2/", auth=("carl", password))
    assert login.status_code == 200, login.text
