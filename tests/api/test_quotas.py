"""Quotas per namespace on one node: every way a push arrives is refused with 403 DENIED
naming the quota once it would pass it, and what was stored before stays servable."""

from __future__ import annotations

import json
from typing import Any

import httpx

from node.cluster.client import call
from tests.api.content import (
    OCI_MANIFEST,
    assert_error,
    descriptor,
    digest_of,
    make_manifest,
    push_blob,
    put_manifest,
    random_bytes,
    start_upload,
)
from tests.conftest import Registry

KIB = 1024


async def admin(registry: Registry, method: str, path: str,
                payload: dict[str, Any] | None = None) -> httpx.Response:
    return await call(registry.client, registry.node.services.secret, method,
                      f"{registry.url}/admin/{path}", payload)


async def set_quota(registry: Registry, pattern: str, *, max_bytes: int | None = None,
                    max_repos: int | None = None) -> None:
    response = await admin(registry, "POST", "quotas", {
        "pattern": pattern, "max_bytes": max_bytes, "max_repos": max_repos})
    assert response.status_code == 201, response.text


async def usage(registry: Registry, pattern: str) -> tuple[int, int]:
    response = await admin(registry, "GET", "quotas")
    (quota,) = [q for q in response.json()["quotas"] if q["pattern"] == pattern]
    return quota["used_bytes"], quota["used_repos"]


def assert_quota_refusal(response: httpx.Response, pattern: str) -> None:
    assert_error(response, 403, "DENIED")
    message = response.json()["errors"][0]["message"]
    assert f"quota {pattern}:" in message and "used" in message, message


async def assert_blob_served(registry: Registry, name: str, data: bytes) -> None:
    response = await registry.client.get(f"/v2/{name}/blobs/{digest_of(data)}")
    assert response.status_code == 200 and response.content == data


async def test_a_monolithic_push_over_the_quota_is_refused_and_the_earlier_blob_stays(
    registry: Registry,
) -> None:
    await set_quota(registry, "team", max_bytes=100 * KIB)
    first = random_bytes(60 * KIB, seed=1)
    await push_blob(registry.client, "team/app", first)
    second = random_bytes(60 * KIB, seed=2)
    response = await registry.client.post("/v2/team/app/blobs/uploads/",
                                          params={"digest": digest_of(second)}, content=second)
    assert_quota_refusal(response, "team")
    assert (await registry.client.head(f"/v2/team/app/blobs/{digest_of(second)}")
            ).status_code == 404
    await assert_blob_served(registry, "team/app", first)
    assert await usage(registry, "team") == (60 * KIB, 1)
    # Elsewhere nothing is capped.
    await push_blob(registry.client, "other/app", second)


async def test_a_post_then_put_upload_over_the_quota_is_refused(registry: Registry) -> None:
    await set_quota(registry, "team", max_bytes=100 * KIB)
    await push_blob(registry.client, "team/app", random_bytes(60 * KIB, seed=1))
    data = random_bytes(60 * KIB, seed=2)
    location = await start_upload(registry.client, "team/app")
    response = await registry.client.put(location, params={"digest": digest_of(data)},
                                         content=data)
    assert_quota_refusal(response, "team")
    assert await usage(registry, "team") == (60 * KIB, 1)


async def test_chunked_patches_are_refused_once_they_would_pass_the_quota(
    registry: Registry,
) -> None:
    await set_quota(registry, "team", max_bytes=100 * KIB)
    data = random_bytes(150 * KIB, seed=3)
    location = await start_upload(registry.client, "team/app")
    accepted = await registry.client.patch(location, content=data[: 64 * KIB], headers={
        "Content-Range": f"0-{64 * KIB - 1}", "Content-Type": "application/octet-stream"})
    assert accepted.status_code == 202, accepted.text
    refused = await registry.client.patch(location, content=data[64 * KIB:], headers={
        "Content-Range": f"{64 * KIB}-{len(data) - 1}",
        "Content-Type": "application/octet-stream"})
    assert_quota_refusal(refused, "team")
    assert await usage(registry, "team") == (0, 0)


async def test_a_chunked_push_without_lengths_is_refused_at_commit(registry: Registry) -> None:
    # No Content-Length to judge early: the state machine refuses the blob when committed.
    await set_quota(registry, "team", max_bytes=100 * KIB)
    await push_blob(registry.client, "team/app", random_bytes(60 * KIB, seed=1))
    data = random_bytes(60 * KIB, seed=2)
    location = await start_upload(registry.client, "team/app")

    async def stream() -> Any:
        yield data

    sent = await registry.client.patch(location, content=stream())
    assert sent.status_code == 202, sent.text
    response = await registry.client.put(sent.headers["Location"],
                                         params={"digest": digest_of(data)})
    assert_quota_refusal(response, "team")
    assert await usage(registry, "team") == (60 * KIB, 1)


async def test_a_mount_from_another_namespace_over_the_quota_is_refused(
    registry: Registry,
) -> None:
    data = random_bytes(80 * KIB, seed=4)
    digest = await push_blob(registry.client, "other/app", data)
    await set_quota(registry, "team", max_bytes=50 * KIB)
    response = await registry.client.post(
        "/v2/team/app/blobs/uploads/", params={"mount": digest, "from": "other/app"})
    assert_quota_refusal(response, "team")
    assert (await registry.client.head(f"/v2/team/app/blobs/{digest}")).status_code == 404
    await assert_blob_served(registry, "other/app", data)


async def test_a_blob_linked_from_two_repositories_of_the_namespace_counts_once(
    registry: Registry,
) -> None:
    await set_quota(registry, "team", max_bytes=100 * KIB)
    data = random_bytes(70 * KIB, seed=5)
    digest = await push_blob(registry.client, "team/a", data)
    mounted = await registry.client.post(
        "/v2/team/b/blobs/uploads/", params={"mount": digest, "from": "team/a"})
    assert mounted.status_code == 201, mounted.text
    await push_blob(registry.client, "team/c", data)  # the same bytes pushed again: free
    assert await usage(registry, "team") == (70 * KIB, 3)


async def manifest_for(registry: Registry, name: str, seed: int) -> bytes:
    config = json.dumps({"seed": seed}).encode()
    await push_blob(registry.client, name, config)
    return make_manifest(descriptor(config, "application/vnd.oci.image.config.v1+json"), [])


async def test_manifests_by_tag_and_by_digest_count_and_are_refused_over_the_quota(
    registry: Registry,
) -> None:
    await set_quota(registry, "team", max_bytes=2 * KIB)
    body = await manifest_for(registry, "team/app", 1)
    tagged = await put_manifest(registry.client, "team/app", "v1", body, OCI_MANIFEST)
    assert tagged.status_code == 201, tagged.text
    used, _ = await usage(registry, "team")
    other = make_manifest(descriptor(json.dumps({"seed": 1}).encode(),
                                     "application/vnd.oci.image.config.v1+json"), [],
                          annotations={"pad": "x" * (2 * KIB)})
    by_digest = await put_manifest(registry.client, "team/app", digest_of(other), other,
                                   OCI_MANIFEST)
    assert_quota_refusal(by_digest, "team")
    by_tag = await put_manifest(registry.client, "team/app", "v2", other, OCI_MANIFEST)
    assert_quota_refusal(by_tag, "team")
    assert (await registry.client.get("/v2/team/app/manifests/v1")).content == body
    assert (await registry.client.get("/v2/team/app/manifests/v2")).status_code == 404
    assert await usage(registry, "team") == (used, 1)


async def test_a_new_repository_past_the_repository_cap_is_refused(registry: Registry) -> None:
    await set_quota(registry, "team", max_repos=2)
    await push_blob(registry.client, "team/a", b"a")
    await push_blob(registry.client, "team/b", b"b")
    await push_blob(registry.client, "team/a", b"more in a known repository")
    response = await registry.client.post("/v2/team/c/blobs/uploads/")
    assert_quota_refusal(response, "team")
    assert "2 of 2 repositories" in response.json()["errors"][0]["message"]
    catalog = (await registry.client.get("/v2/_catalog")).json()["repositories"]
    assert "team/c" not in catalog


async def test_a_glob_quota_covers_the_repositories_it_matches(registry: Registry) -> None:
    await set_quota(registry, "ci-*", max_bytes=10 * KIB)
    await push_blob(registry.client, "ci-web/cache", random_bytes(8 * KIB, seed=6))
    data = random_bytes(8 * KIB, seed=7)
    response = await registry.client.post("/v2/ci-api/cache/blobs/uploads/",
                                          params={"digest": digest_of(data)}, content=data)
    assert_quota_refusal(response, "ci-*")


async def test_removing_a_quota_lifts_its_cap_and_bad_quotas_are_4xx(registry: Registry) -> None:
    await set_quota(registry, "team", max_bytes=1)
    data = random_bytes(KIB, seed=8)
    refused = await registry.client.post("/v2/team/app/blobs/uploads/",
                                         params={"digest": digest_of(data)}, content=data)
    assert_quota_refusal(refused, "team")
    removed = await admin(registry, "DELETE", "quotas?pattern=team")
    assert removed.status_code == 200, removed.text
    await push_blob(registry.client, "team/app", data)
    assert_error(await admin(registry, "DELETE", "quotas?pattern=team"), 404, "QUOTA_UNKNOWN")
    for bad in ({"pattern": "team"}, {"pattern": "Team!", "max_bytes": 1},
                {"pattern": "team", "max_bytes": -1}, {"pattern": "team", "max_repos": "5"}):
        response = await admin(registry, "POST", "quotas", bad)
        assert 400 <= response.status_code < 500, (bad, response.text)


async def test_metrics_show_usage_and_limit_per_quota(registry: Registry) -> None:
    await set_quota(registry, "team", max_bytes=100 * KIB, max_repos=5)
    await push_blob(registry.client, "team/app", random_bytes(3 * KIB, seed=9))
    text = (await registry.client.get("/metrics")).text
    assert f'flotilla_quota_used_bytes{{quota="team"}} {float(3 * KIB)}' in text
    assert f'flotilla_quota_limit_bytes{{quota="team"}} {float(100 * KIB)}' in text
    assert 'flotilla_quota_used_repos{quota="team"} 1.0' in text
    assert 'flotilla_quota_limit_repos{quota="team"} 5.0' in text
