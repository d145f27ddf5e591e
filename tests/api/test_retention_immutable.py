"""Retention policies and immutable tags on one node, through its HTTP API.

The node runs with no access control on loopback, so the admin API answers
anyone; who may manage which rule is checked in tests/api/test_policy_access.py.
"""

from __future__ import annotations

import json

import trio

from tests.api.content import assert_error, make_manifest, push_image, put_manifest
from tests.conftest import Registry


async def _tags(registry: Registry, repo: str) -> list[str]:
    response = await registry.client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200, response.text
    return response.json()["tags"] or []


async def _immutable(registry: Registry, pattern: str, exclude: list[str] | None = None) -> None:
    response = await registry.client.post(
        "/admin/immutable-tags", json={"pattern": pattern, "exclude": exclude or []}
    )
    assert response.status_code == 201, response.text


async def test_moving_an_immutable_tag_is_refused_naming_the_rule(registry: Registry) -> None:
    await _immutable(registry, "team/*", ["^latest$", "^dev-"])
    first = await push_image(registry.client, "team/app", "1.0", seed=1)
    await push_image(registry.client, "team/app", "latest", seed=1)
    other = await push_image(registry.client, "team/app", seed=2)  # by digest: no tag moves

    moved = await put_manifest(registry.client, "team/app", "1.0", other.body, other.media_type)
    assert_error(moved, 403, "DENIED")
    message = moved.json()["errors"][0]["message"]
    assert "1.0" in message and "team/*" in message and first.digest in message
    pulled = await registry.client.get("/v2/team/app/manifests/1.0")
    assert pulled.headers["Docker-Content-Digest"] == first.digest

    again = await put_manifest(registry.client, "team/app", "1.0", first.body, first.media_type)
    assert again.status_code == 201, again.text
    for excluded in ("latest", "dev-42"):
        response = await put_manifest(registry.client, "team/app", excluded, other.body,
                                      other.media_type)
        assert response.status_code == 201, response.text
    await push_image(registry.client, "other/app", "1.0", seed=1)
    await push_image(registry.client, "other/app", "1.0", seed=2)  # no rule there: it moves


async def test_a_manifest_pushed_by_digest_then_tagged_cannot_take_an_immutable_tag(
    registry: Registry,
) -> None:
    await _immutable(registry, "app")
    await push_image(registry.client, "app", "v1", seed=1)
    second = await push_image(registry.client, "app", seed=2)
    tagging = await put_manifest(registry.client, "app", "v1", second.body, second.media_type)
    assert_error(tagging, 403, "DENIED")
    fresh = await put_manifest(registry.client, "app", "v2", second.body, second.media_type)
    assert fresh.status_code == 201


async def test_a_tag_that_was_deleted_may_be_pushed_anew(registry: Registry) -> None:
    await _immutable(registry, "app")
    await push_image(registry.client, "app", "v1", seed=1)
    second = await push_image(registry.client, "app", seed=2)
    assert (await registry.client.delete("/v2/app/manifests/v1")).status_code == 202
    response = await put_manifest(registry.client, "app", "v1", second.body, second.media_type)
    assert response.status_code == 201


async def test_immutable_rules_are_listed_and_removed(registry: Registry) -> None:
    await _immutable(registry, "team/*", ["^latest$"])
    listed = await registry.client.get("/admin/immutable-tags")
    assert listed.json() == {"rules": [{"pattern": "team/*", "exclude": ["^latest$"]}]}
    removed = await registry.client.delete("/admin/immutable-tags", params={"pattern": "team/*"})
    assert removed.status_code == 200
    await push_image(registry.client, "team/app", "1.0", seed=1)
    other = await push_image(registry.client, "team/app", seed=2)
    moved = await put_manifest(registry.client, "team/app", "1.0", other.body, other.media_type)
    assert moved.status_code == 201
    again = await registry.client.delete("/admin/immutable-tags", params={"pattern": "team/*"})
    assert_error(again, 404, "POLICY_UNKNOWN")


async def test_retention_keeps_the_newest_tags_and_the_patterns_it_must(
    registry: Registry,
) -> None:
    for i in range(5):
        await push_image(registry.client, "app", f"build-{i}", seed=i)
    await push_image(registry.client, "app", "v1.0.0", seed=9)
    policy = {"pattern": "app", "keep_last": 2, "keep": [r"^v\d+\.\d+\.\d+$"]}
    response = await registry.client.post("/admin/policies", json=policy)
    assert response.status_code == 201, response.text

    listed = (await registry.client.get("/admin/policies")).json()["policies"]
    assert [p["pattern"] for p in listed] == ["app"] and listed[0]["keep_last"] == 2
    test = await registry.client.get("/admin/policies/test", params={"pattern": "app"})
    assert test.status_code == 200
    would = sorted(t["tag"] for t in test.json()["tags"])
    assert len(would) == 3 and "v1.0.0" not in would
    assert await _tags(registry, "app") == sorted(
        [f"build-{i}" for i in range(5)] + ["v1.0.0"])  # a test deletes nothing

    applied = await registry.client.post("/admin/policies/apply")
    assert applied.status_code == 200, applied.text
    deleted = sorted(t["tag"] for t in applied.json()["tags"])
    assert deleted == would
    left = await _tags(registry, "app")
    assert "v1.0.0" in left and len(left) == 3
    for tag in deleted:
        assert (await registry.client.get(f"/v2/app/manifests/{tag}")).status_code == 404

    audit = [json.loads(line) for line in (registry.data / "audit.log").read_text().splitlines()]
    logged = sorted(a["tag"] for a in audit if a["action"] == "retention_tag_deleted")
    assert logged == deleted
    assert any(a["action"] == "retention_policy_set" for a in audit)

    second = await registry.client.post("/admin/policies/apply")
    assert second.json()["tags"] == []  # applying again deletes nothing more


async def test_retention_deletes_untagged_manifests_but_not_an_index_child(
    registry: Registry,
) -> None:
    untagged = await push_image(registry.client, "app", seed=1)
    tagged = await push_image(registry.client, "app", "keep", seed=2)
    response = await registry.client.post(
        "/admin/policies", json={"pattern": "app", "untagged_older_than": 0}
    )
    assert response.status_code == 201
    # Ages are whole seconds: a manifest pushed this second is not yet older than 0.
    await trio.sleep(1.1)
    applied = (await registry.client.post("/admin/policies/apply")).json()
    assert [m["digest"] for m in applied["manifests"]] == [untagged.digest]
    gone = await registry.client.get(f"/v2/app/manifests/{untagged.digest}")
    assert gone.status_code == 404
    kept = await registry.client.get(f"/v2/app/manifests/{tagged.digest}")
    assert kept.status_code == 200


async def test_a_policy_is_removed_and_then_deletes_nothing(registry: Registry) -> None:
    for i in range(3):
        await push_image(registry.client, "app", f"t{i}", seed=i)
    await registry.client.post("/admin/policies", json={"pattern": "app", "keep_last": 0})
    removed = await registry.client.delete("/admin/policies", params={"pattern": "app"})
    assert removed.status_code == 200
    applied = (await registry.client.post("/admin/policies/apply")).json()
    assert applied["tags"] == [] and len(await _tags(registry, "app")) == 3
    missing = await registry.client.get("/admin/policies/test", params={"pattern": "app"})
    assert_error(missing, 404, "POLICY_UNKNOWN")


async def test_bad_policies_and_rules_are_400s_naming_the_fault(registry: Registry) -> None:
    bad = [
        {"pattern": "app", "keep_last": 1, "keep": ["(a+)+$"]},  # can backtrack for ever
        {"pattern": "app", "keep_last": 1, "only": ["("]},  # does not compile
        {"pattern": "app", "keep_last": 1, "keep": ["x" * 500]},
        {"pattern": "app", "keep_last": 1, "keep": [r"(\d)\1"]},
        {"pattern": "app", "keep_last": -1},
        {"pattern": "app", "keep_last": "3"},
        {"pattern": "app", "older_than": 1.5},
        {"pattern": "app"},  # no rule at all
        {"pattern": "Not A Name", "keep_last": 1},
        {"keep_last": 1},
        {"pattern": "app", "keep_last": 1, "keep": "^v"},
        {"pattern": "app", "keep_last": 1, "keep": [3]},
    ]
    for body in bad:
        response = await registry.client.post("/admin/policies", json=body)
        assert_error(response, 400, "REQUEST_INVALID")
    rule = await registry.client.post("/admin/immutable-tags",
                                      json={"pattern": "app", "exclude": ["(a|b)*c"]})
    assert_error(rule, 400, "REQUEST_INVALID")
    assert "backtrack" in rule.json()["errors"][0]["message"]
    garbage = await registry.client.post("/admin/policies", content=b"\xff{",
                                         headers={"Content-Type": "application/json"})
    assert_error(garbage, 400, "REQUEST_INVALID")
    assert (await registry.client.get("/admin/policies")).json() == {"policies": []}


async def test_under_an_immutable_rule_new_tags_and_digest_pushes_go_through(
    registry: Registry,
) -> None:
    await _immutable(registry, "*")
    first = await push_image(registry.client, "app", "v1", seed=1)
    await push_image(registry.client, "app", seed=2)  # by digest
    await push_image(registry.client, "app", "v2", seed=3)
    assert await _tags(registry, "app") == ["v1", "v2"]
    body = make_manifest({"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1}, [])
    response = await put_manifest(registry.client, "app", "v3", body,
                                  "application/vnd.oci.image.manifest.v1+json")
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")  # a bad manifest: refused as before
    pulled = await registry.client.get("/v2/app/manifests/v1")
    assert pulled.headers["Docker-Content-Digest"] == first.digest
