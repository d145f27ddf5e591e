"""`/token`, the Docker token endpoint, as docker, containerd and a robot use it: what a
token grants, the OAuth2 password and refresh grants, refresh tokens that end with the
password, refusals (unknown service, wrong password, too many failures), key rotation
and robot accounts with an expiry."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio

from consensus.commands import DeleteAccount, DeleteGrant, PutAccount, PutGrant, SetPublic
from node.access.passwords import hash_password, hash_robot_token, new_robot_token
from node.access.tokens import new_signing_key
from node.app import serve
from node.config import Config
from tests.api.content import OCI_MANIFEST, assert_error, push_image
from tests.conftest import Registry

PASSWORD = "s3cret pass phrase"
SERVICE = "flotilla"
SECRET_HASH = hash_password(PASSWORD)  # argon2 is slow on purpose: hashed once here


def basic(name: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def access_of(token: str) -> dict[str, list[str]]:
    return {entry["name"]: entry["actions"] for entry in claims(token).get("access", [])}


@pytest.fixture
async def registry(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Registry]:
    """A token-mode node with an admin, a reader of `team/*`, and `library/*` public,
    `library/base` and `team/app` holding an image tagged `1`."""
    config = Config(data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024,
                    tick_ms=2, auth="token")
    node = await nursery.start(serve, config)
    engine = node.services.engine
    await engine.propose(PutAccount(name="admin", secret_hash=SECRET_HASH))
    await engine.propose(PutGrant(principal="admin", role="admin", pattern="*"))
    await engine.propose(PutAccount(name="alice", secret_hash=SECRET_HASH))
    await engine.propose(PutGrant(principal="alice", role="reader", pattern="team/*"))
    await engine.propose(SetPublic(pattern="library/*"))
    async with httpx.AsyncClient(base_url=node.url, timeout=30,
                                 headers=basic("admin", PASSWORD)) as admin:
        for repo in ("library/base", "team/app"):
            await push_image(admin, repo, "1", seed=len(repo))
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        yield Registry(node, client, config.data)
    node.cancel_scope.cancel()


async def get_token(registry: Registry, *scopes: str, headers: dict[str, str] | None = None,
                    **params: str) -> httpx.Response:
    return await registry.client.get(
        "/token", params={"service": SERVICE, "scope": list(scopes), **params},
        headers=headers or {},
    )


async def pull_status(registry: Registry, repo: str, token: str) -> int:
    response = await registry.client.get(f"/v2/{repo}/manifests/1",
                                         headers=bearer(token) | {"Accept": OCI_MANIFEST})
    return response.status_code


async def test_anonymous_token_grants_only_pull_of_public_repositories(
    registry: Registry,
) -> None:
    response = await get_token(registry, "repository:library/base:pull,push",
                               "repository:team/app:pull")
    assert response.status_code == 200
    body = response.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert "refresh_token" not in body
    token = body["token"]
    assert access_of(token) == {"library/base": ["pull"]}
    assert claims(token)["sub"] == ""
    assert await pull_status(registry, "library/base", token) == 200
    assert await pull_status(registry, "team/app", token) == 401


async def test_basic_credentials_at_get_buy_what_the_grants_allow(registry: Registry) -> None:
    response = await get_token(registry, "repository:team/app:pull",
                               headers=basic("alice", PASSWORD))
    assert response.status_code == 200
    token = response.json()["token"]
    assert claims(token)["sub"] == "alice"
    assert await pull_status(registry, "team/app", token) == 200


async def test_asked_scopes_are_cut_down_to_the_grants(registry: Registry) -> None:
    response = await get_token(
        registry, "repository:team/app:pull,push,delete", "repository:secret/stuff:pull",
        "repository:library/base:*", headers=basic("alice", PASSWORD),
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert access_of(token) == {"team/app": ["pull"], "library/base": ["pull"]}
    put = await registry.client.put("/v2/team/app/manifests/2", content=b"{}",
                                    headers=bearer(token) | {"Content-Type": OCI_MANIFEST})
    assert_error(put, 403, "DENIED")


async def test_offline_token_at_get_comes_with_a_refresh_token(registry: Registry) -> None:
    response = await get_token(registry, "repository:team/app:pull",
                               headers=basic("alice", PASSWORD), offline_token="true")
    assert response.status_code == 200
    assert claims(response.json()["refresh_token"])["typ"] == "refresh"


async def password_grant(registry: Registry, username: str, password: str,
                         scope: str = "repository:team/app:pull") -> httpx.Response:
    return await registry.client.post("/token", data={
        "grant_type": "password", "username": username, "password": password,
        "service": SERVICE, "scope": scope, "client_id": "containerd",
    })


async def refresh_grant(registry: Registry, refresh_token: str,
                        scope: str = "repository:team/app:pull") -> httpx.Response:
    return await registry.client.post("/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "service": SERVICE, "scope": scope, "client_id": "containerd",
    })


async def test_containerd_flow_password_then_refresh_token(registry: Registry) -> None:
    first = await password_grant(registry, "alice", PASSWORD)
    assert first.status_code == 200
    refresh_token = first.json()["refresh_token"]
    assert await pull_status(registry, "team/app", first.json()["access_token"]) == 200
    again = await refresh_grant(registry, refresh_token)
    assert again.status_code == 200
    access_token = again.json()["access_token"]
    assert access_of(access_token) == {"team/app": ["pull"]}
    assert await pull_status(registry, "team/app", access_token) == 200
    # OAuth2 joins scopes with spaces.
    both = await refresh_grant(registry, refresh_token,
                               "repository:team/app:pull repository:library/base:pull")
    assert access_of(both.json()["access_token"]) == {"team/app": ["pull"],
                                                      "library/base": ["pull"]}


async def test_a_refresh_token_is_not_an_access_token(registry: Registry) -> None:
    refresh_token = (await password_grant(registry, "alice", PASSWORD)).json()["refresh_token"]
    response = await registry.client.get("/v2/team/app/tags/list", headers=bearer(refresh_token))
    assert_error(response, 401, "UNAUTHORIZED")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_a_refresh_token_ends_when_the_password_changes(registry: Registry) -> None:
    refresh_token = (await password_grant(registry, "alice", PASSWORD)).json()["refresh_token"]
    await registry.node.services.engine.propose(
        PutAccount(name="alice", secret_hash=hash_password("a new password"))
    )
    response = await refresh_grant(registry, refresh_token)
    assert_error(response, 401, "UNAUTHORIZED")
    assert (await password_grant(registry, "alice", "a new password")).status_code == 200


async def test_a_refresh_token_ends_when_the_account_is_deleted(registry: Registry) -> None:
    refresh_token = (await password_grant(registry, "alice", PASSWORD)).json()["refresh_token"]
    await registry.node.services.engine.propose(DeleteAccount(name="alice"))
    assert_error(await refresh_grant(registry, refresh_token), 401, "UNAUTHORIZED")


async def test_an_unknown_service_is_a_bad_request(registry: Registry) -> None:
    response = await registry.client.get("/token", params={"service": "elsewhere"},
                                         headers=basic("alice", PASSWORD))
    assert_error(response, 400, "REQUEST_INVALID")
    post = await registry.client.post("/token", data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "service": "elsewhere",
    })
    assert_error(post, 400, "REQUEST_INVALID")


async def test_an_unknown_grant_type_is_a_bad_request(registry: Registry) -> None:
    response = await registry.client.post("/token", data={"grant_type": "client_credentials"})
    assert_error(response, 400, "REQUEST_INVALID")


async def test_a_wrong_password_is_refused_with_a_challenge(registry: Registry) -> None:
    for response in (
        await get_token(registry, "repository:team/app:pull", headers=basic("alice", "wrong")),
        await password_grant(registry, "alice", "wrong"),
        await password_grant(registry, "nobody", PASSWORD),
    ):
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
        assert "wrong" not in response.text and PASSWORD not in response.text


async def test_eleven_failed_logins_from_one_address_are_throttled(registry: Registry) -> None:
    # Guesses at names that do not exist count as much as wrong passwords.
    for guess in range(10):
        user = "alice" if guess % 5 == 0 else f"nobody{guess}"
        assert (await password_grant(registry, user, "guess")).status_code == 401
    throttled = await password_grant(registry, "alice", "guess")
    assert_error(throttled, 429, "TOOMANYREQUESTS")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # The right password waits too: a guesser learns nothing from the answer.
    right = await get_token(registry, "repository:team/app:pull", headers=basic("alice", PASSWORD))
    assert_error(right, 429, "TOOMANYREQUESTS")
    basic_pull = await registry.client.get("/v2/team/app/tags/list",
                                           headers=basic("alice", PASSWORD))
    assert_error(basic_pull, 429, "TOOMANYREQUESTS")


async def test_tokens_signed_before_a_key_rotation_still_work_and_new_ones_carry_the_new_kid(
    registry: Registry,
) -> None:
    before = (await get_token(registry, "repository:team/app:pull",
                              headers=basic("alice", PASSWORD))).json()["token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    gate = registry.node.services.gate
    kid, pem = new_signing_key()
    await registry.node.services.engine.propose(gate.signing_key_command(kid, pem))
    assert await pull_status(registry, "team/app", before) == 200
    after = (await get_token(registry, "repository:team/app:pull",
                             headers=basic("alice", PASSWORD))).json()["token"]
    assert jwt.get_unverified_header(after)["kid"] == kid != old_kid
    assert await pull_status(registry, "team/app", after) == 200


async def make_robot(registry: Registry, *, expires_at: int | None) -> str:
    token = new_robot_token()
    engine = registry.node.services.engine
    await engine.propose(PutAccount(name="ci", robot=True, secret_hash=hash_robot_token(token),
                                    expires_at=expires_at))
    await engine.propose(PutGrant(principal="ci", role="writer", pattern="team/app"))
    return token


async def test_a_robot_token_works_as_basic_password_and_at_the_token_endpoint(
    registry: Registry,
) -> None:
    robot = await make_robot(registry, expires_at=int(time.time()) + 3600)
    listed = await registry.client.get("/v2/team/app/tags/list", headers=basic("ci", robot))
    assert listed.status_code == 200
    assert listed.json()["tags"] == ["1"]
    response = await get_token(registry, "repository:team/app:pull,push",
                               "repository:team/other:pull", headers=basic("ci", robot))
    assert response.status_code == 200
    assert access_of(response.json()["token"]) == {"team/app": ["pull", "push"]}
    posted = await password_grant(registry, "ci", robot)
    assert posted.status_code == 200
    assert await pull_status(registry, "team/app", posted.json()["access_token"]) == 200


async def test_an_expired_robot_is_refused(registry: Registry) -> None:
    robot = await make_robot(registry, expires_at=int(time.time()) - 60)
    listed = await registry.client.get("/v2/team/app/tags/list", headers=basic("ci", robot))
    assert_error(listed, 401, "UNAUTHORIZED")
    response = await get_token(registry, "repository:team/app:pull", headers=basic("ci", robot))
    assert_error(response, 401, "UNAUTHORIZED")
    assert_error(await password_grant(registry, "ci", robot), 401, "UNAUTHORIZED")


async def test_a_bearer_token_cannot_buy_another_token(registry: Registry) -> None:
    token = (await get_token(registry, "repository:team/app:pull",
                             headers=basic("alice", PASSWORD))).json()["token"]
    response = await get_token(registry, "repository:team/app:pull", headers=bearer(token))
    assert_error(response, 401, "UNAUTHORIZED")


async def test_the_token_endpoint_is_absent_unless_auth_is_token(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = Config(data=tmp_path / "basic", listen="127.0.0.1:0", tick_ms=2, auth="basic")
    node = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=node.url) as client:
        assert_error(await client.get("/token"), 404, "NOT_FOUND")
    node.cancel_scope.cancel()


async def test_unreadable_token_requests_are_4xx_never_a_500(registry: Registry) -> None:
    not_utf8 = await registry.client.post(
        "/token", content=b"grant_type=password&username=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(not_utf8, 400, "REQUEST_INVALID")
    huge = await registry.client.post("/token", content=b"a=" + b"b" * (70 * 1024),
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert 400 <= huge.status_code < 500, huge.text[:200]
    assert_error(huge, huge.status_code, huge.json()["errors"][0]["code"])
    assert_error(await registry.client.put("/token"), 405, "UNSUPPORTED")
    garbage = await get_token(registry, "", ":", "repository::pull", "repository:UP:pull",
                              "x" * 2000, "registry:catalog", "repository:team/app:pull:extra",
                              headers=basic("alice", PASSWORD))
    assert garbage.status_code == 200
    assert access_of(garbage.json()["token"]) == {}


async def test_a_configured_realm_is_what_challenges_name(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = Config(data=tmp_path / "realm", listen="127.0.0.1:0", tick_ms=2, auth="token",
                    auth_realm="https://registry.example.com/token",
                    auth_service="registry.example")
    node = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=node.url) as client:
        response = await client.get("/v2/team/app/tags/list")
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["WWW-Authenticate"] == (
            'Bearer realm="https://registry.example.com/token",service="registry.example",'
            'scope="repository:team/app:pull"'
        )
        anonymous = await client.get("/token", params={"service": "registry.example"})
        assert anonymous.status_code == 200
        assert claims(anonymous.json()["token"])["aud"] == "registry.example"
        assert_error(await client.get("/token", params={"service": "flotilla"}), 400,
                     "REQUEST_INVALID")
    node.cancel_scope.cancel()


async def test_no_password_or_token_reaches_the_logs_or_the_audit_log(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = Config(data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024,
                    tick_ms=2, auth="token", access_log=True)
    node = await nursery.start(serve, config)
    engine = node.services.engine
    robot = new_robot_token()
    await engine.propose(PutAccount(name="alice", secret_hash=SECRET_HASH))
    await engine.propose(PutGrant(principal="alice", role="writer", pattern="team/*"))
    await engine.propose(PutAccount(name="ci", robot=True, secret_hash=hash_robot_token(robot)))
    await engine.propose(PutGrant(principal="ci", role="writer", pattern="team/*"))
    secrets = [PASSWORD, robot, "wrong-but-secret"]
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        registry = Registry(node, client, config.data)
        for name, secret in (("alice", PASSWORD), ("ci", robot)):
            posted = await password_grant(registry, name, secret, "repository:team/app:pull,push")
            secrets += [posted.json()["access_token"], posted.json()["refresh_token"]]
            refreshed = await refresh_grant(registry, posted.json()["refresh_token"])
            secrets.append(refreshed.json()["access_token"])
            async with httpx.AsyncClient(base_url=node.url, timeout=30,
                                         headers=bearer(posted.json()["access_token"])) as pusher:
                await push_image(pusher, "team/app", name, seed=len(name))
            listed = await client.get("/v2/team/app/tags/list", headers=basic(name, secret))
            assert listed.status_code == 200
        assert (await password_grant(registry, "alice", "wrong-but-secret")).status_code == 401
        assert (await client.get("/v2/", headers=basic("ci", "wrong-but-secret"))).status_code \
            == 401
    node.cancel_scope.cancel()
    await trio.sleep(0)
    audit = (config.data / "audit.log").read_text()
    assert '"action": "login_failed"' in audit and '"push_manifest"' in audit
    logged = caplog.text + audit
    assert "/token" in caplog.text  # the access log saw the token requests
    leaked = [secret[:12] for secret in secrets if secret in logged]
    assert not leaked


async def test_a_revoked_grant_or_visibility_is_refused_at_the_next_request(
    registry: Registry,
) -> None:
    engine = registry.node.services.engine
    before = await get_token(registry, "repository:team/app:pull", headers=basic("alice", PASSWORD))
    assert access_of(before.json()["token"]) == {"team/app": ["pull"]}
    await engine.propose(DeleteGrant(principal="alice", pattern="team/*"))
    after = await get_token(registry, "repository:team/app:pull", headers=basic("alice", PASSWORD))
    assert access_of(after.json()["token"]) == {}
    listed = await registry.client.get("/v2/team/app/tags/list", headers=basic("alice", PASSWORD))
    assert_error(listed, 403, "DENIED")
    assert (await registry.client.get("/v2/library/base/tags/list")).status_code == 200
    await engine.propose(SetPublic(pattern="library/*", public=False))
    hidden = await registry.client.get("/v2/library/base/tags/list")
    assert_error(hidden, 401, "UNAUTHORIZED")
    anonymous = await get_token(registry, "repository:library/base:pull")
    assert access_of(anonymous.json()["token"]) == {}
