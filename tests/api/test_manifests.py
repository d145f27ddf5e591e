"""`/v2/<name>/manifests/<reference>`: the four manifest formats, validation, subject, delete."""

from __future__ import annotations

import json

import pytest

from tests.api.content import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Pushed,
    assert_error,
    descriptor,
    digest_of,
    make_index,
    make_manifest,
    push_artifact,
    push_blob,
    push_image,
    put_manifest,
)
from tests.conftest import Registry

NAME = "team/app"
MiB = 1 << 20


async def assert_served(registry: Registry, name: str, reference: str, pushed: Pushed) -> None:
    """GET and HEAD by `reference` give the exact bytes, media type and digest."""
    url = f"/v2/{name}/manifests/{reference}"
    response = await registry.client.get(url, headers={"Accept": pushed.media_type})
    assert response.status_code == 200
    assert response.content == pushed.body
    assert response.headers["Content-Type"] == pushed.media_type
    assert response.headers["Docker-Content-Digest"] == pushed.digest
    head = await registry.client.head(url, headers={"Accept": pushed.media_type})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(pushed.body))
    assert head.headers["Content-Type"] == pushed.media_type
    assert head.headers["Docker-Content-Digest"] == pushed.digest


async def config_and_layer(registry: Registry, name: str = NAME) -> tuple[dict, dict]:
    config, layer = b'{"os":"linux"}', b"layer bytes"
    await push_blob(registry.client, name, config)
    await push_blob(registry.client, name, layer)
    return descriptor(config, OCI_CONFIG), descriptor(layer, OCI_LAYER)


# The four formats


async def test_oci_image_manifest_round_trips_by_tag_and_digest(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    body = make_manifest(config, [layer])
    response = await put_manifest(registry.client, NAME, "v1.0", body, OCI_MANIFEST)
    assert response.status_code == 201
    digest = digest_of(body)
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Location"] == f"/v2/{NAME}/manifests/{digest}"
    pushed = Pushed(body, digest, OCI_MANIFEST)
    await assert_served(registry, NAME, "v1.0", pushed)
    await assert_served(registry, NAME, digest, pushed)


async def test_docker_schema2_manifest_round_trips(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME, "latest", docker=True, layer_count=2)
    assert pushed.media_type == DOCKER_MANIFEST
    await assert_served(registry, NAME, "latest", pushed)
    await assert_served(registry, NAME, pushed.digest, pushed)


@pytest.mark.parametrize(("docker", "media_type"), [(False, OCI_INDEX), (True, DOCKER_LIST)])
async def test_index_and_manifest_list_round_trip(
    registry: Registry, docker: bool, media_type: str
) -> None:
    amd64 = await push_image(registry.client, NAME, seed=1, docker=docker)
    arm64 = await push_image(registry.client, NAME, seed=2, docker=docker)
    body = make_index(
        [
            amd64.descriptor(platform={"architecture": "amd64", "os": "linux"}),
            arm64.descriptor(platform={"architecture": "arm64", "os": "linux"}),
        ],
        media_type=media_type,
    )
    response = await put_manifest(registry.client, NAME, "multi", body, media_type)
    assert response.status_code == 201
    pushed = Pushed(body, digest_of(body), media_type)
    await assert_served(registry, NAME, "multi", pushed)
    await assert_served(registry, NAME, pushed.digest, pushed)


async def test_oci_artifact_with_artifact_type_is_stored(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    artifact = await push_artifact(registry.client, NAME, subject)
    assert json.loads(artifact.body)["artifactType"] == "application/vnd.example.sbom.v1"
    await assert_served(registry, NAME, artifact.digest, artifact)


async def test_media_type_is_taken_from_the_body_when_content_type_is_generic(
    registry: Registry,
) -> None:
    config, layer = await config_and_layer(registry)
    body = make_manifest(config, [layer], media_type=DOCKER_MANIFEST)
    response = await put_manifest(registry.client, NAME, "v1", body, "application/json")
    assert response.status_code == 201
    served = await registry.client.get(f"/v2/{NAME}/manifests/v1")
    assert served.headers["Content-Type"] == DOCKER_MANIFEST


async def test_content_type_disagreeing_with_body_media_type_is_manifest_invalid(
    registry: Registry,
) -> None:
    config, layer = await config_and_layer(registry)
    body = make_manifest(config, [layer], media_type=OCI_MANIFEST)
    response = await put_manifest(registry.client, NAME, "v1", body, DOCKER_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")


async def test_put_by_digest_stores_the_manifest_without_a_tag(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME)
    await assert_served(registry, NAME, pushed.digest, pushed)
    tags = await registry.client.get(f"/v2/{NAME}/tags/list")
    assert tags.json()["tags"] == []


async def test_put_by_digest_with_a_different_body_is_digest_invalid(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    body = make_manifest(config, [layer])
    other = digest_of(body + b" ")
    response = await put_manifest(registry.client, NAME, other, body, OCI_MANIFEST)
    assert_error(response, 400, "DIGEST_INVALID")
    assert (await registry.client.get(f"/v2/{NAME}/manifests/{other}")).status_code == 404
    assert (
        await registry.client.get(f"/v2/{NAME}/manifests/{digest_of(body)}")
    ).status_code == 404


async def test_sha512_manifest_is_stored_and_served_by_its_digest(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    body = make_manifest(config, [layer])
    digest = digest_of(body, "sha512")
    response = await put_manifest(registry.client, NAME, digest, body, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["Docker-Content-Digest"] == digest
    await assert_served(registry, NAME, digest, Pushed(body, digest, OCI_MANIFEST))


async def test_manifest_referencing_sha512_blobs(registry: Registry) -> None:
    config, layer = b'{"os":"linux"}', b"sha512 layer"
    config_digest = await push_blob(registry.client, NAME, config, algorithm="sha512")
    layer_digest = await push_blob(registry.client, NAME, layer, algorithm="sha512")
    body = make_manifest(
        {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
    )
    response = await put_manifest(registry.client, NAME, "v1", body, OCI_MANIFEST)
    assert response.status_code == 201


async def test_pushing_a_tag_again_moves_it(registry: Registry) -> None:
    first = await push_image(registry.client, NAME, "latest", seed=1)
    second = await push_image(registry.client, NAME, "latest", seed=2)
    await assert_served(registry, NAME, "latest", second)
    await assert_served(registry, NAME, first.digest, first)


async def test_pushing_the_same_manifest_twice_is_idempotent(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME, "v1")
    again = await put_manifest(registry.client, NAME, "v1", pushed.body, pushed.media_type)
    assert again.status_code == 201
    await assert_served(registry, NAME, "v1", pushed)


# Size and validation


async def test_manifest_over_4_mib_is_413(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    body = make_manifest(config, [layer], annotations={"pad": "x" * (4 * MiB)})
    response = await put_manifest(registry.client, NAME, "big", body, OCI_MANIFEST)
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] in ("SIZE_INVALID", "MANIFEST_INVALID")
    assert (await registry.client.get(f"/v2/{NAME}/manifests/big")).status_code == 404


async def test_manifest_over_4_mib_without_content_length_is_413(registry: Registry) -> None:
    async def stream():  # Transfer-Encoding: chunked, so the size is only learnt by reading
        for _ in range(5):
            yield b" " * MiB

    response = await registry.client.put(
        f"/v2/{NAME}/manifests/big", content=stream(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] in ("SIZE_INVALID", "MANIFEST_INVALID")
    assert (await registry.client.get("/v2/")).status_code == 200  # connection still usable


async def test_manifest_of_exactly_4_mib_is_accepted(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    bare = make_manifest(config, [layer], annotations={"pad": ""})
    body = make_manifest(config, [layer], annotations={"pad": "x" * (4 * MiB - len(bare))})
    assert len(body) == 4 * MiB
    response = await put_manifest(registry.client, NAME, "edge", body, OCI_MANIFEST)
    assert response.status_code == 201


def _valid_image() -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(b"l"), "size": 1}],
    }


def _broken(**changes: object) -> bytes:
    doc = _valid_image()
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


INVALID_MANIFESTS = {
    "not json": b"this is not json",
    "truncated json": b'{"schemaVersion": 2, "config": ',
    "not utf-8": b'{"schemaVersion": 2, "x": "\xff\xfe"}',
    "json array": b"[1, 2, 3]",
    "json string": b'"manifest"',
    "empty body": b"",
    "deeply nested": b"[" * 200_000 + b"]" * 200_000,
    "schema version 1": _broken(schemaVersion=1),
    "schema version as string": _broken(schemaVersion="2"),
    "no schema version": _broken(schemaVersion=None),
    "no config": _broken(config=None),
    "config not an object": _broken(config="sha256:abc"),
    "layers missing": _broken(layers=None),
    "layers not a list": _broken(layers={"0": {}}),
    "layer not an object": _broken(layers=[42]),
    "descriptor without digest": _broken(layers=[{"mediaType": OCI_LAYER, "size": 1}]),
    "descriptor without media type": _broken(
        layers=[{"digest": digest_of(b"l"), "size": 1}]
    ),
    "descriptor with malformed digest": _broken(
        layers=[{"mediaType": OCI_LAYER, "digest": "sha256:123", "size": 1}]
    ),
    "descriptor with uppercase digest": _broken(
        layers=[{"mediaType": OCI_LAYER, "digest": digest_of(b"l").upper(), "size": 1}]
    ),
    "descriptor with negative size": _broken(
        layers=[{"mediaType": OCI_LAYER, "digest": digest_of(b"l"), "size": -1}]
    ),
    "descriptor with string size": _broken(
        layers=[{"mediaType": OCI_LAYER, "digest": digest_of(b"l"), "size": "1"}]
    ),
    "descriptor with boolean size": _broken(
        layers=[{"mediaType": OCI_LAYER, "digest": digest_of(b"l"), "size": True}]
    ),
    "unknown media type": _broken(mediaType="application/vnd.example.unknown+json"),
    "media type not a string": _broken(mediaType=7),
    "empty artifact type": _broken(artifactType=""),
    "artifact type not a string": _broken(artifactType=["x"]),
    "annotations not strings": _broken(annotations={"a": 1}),
    "annotations not an object": _broken(annotations=["a"]),
    "subject not a descriptor": _broken(subject="sha256:" + "0" * 64),
    "subject with bad digest": _broken(
        subject={"mediaType": OCI_MANIFEST, "digest": "md5:abc", "size": 3}
    ),
    "index manifests not a list": json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {}}
    ).encode(),
    "index child not a descriptor": json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ["sha256:abc"]}
    ).encode(),
    "docker schema 1": json.dumps(
        {"schemaVersion": 1, "name": "team/app", "tag": "v1", "fsLayers": []}
    ).encode(),
}


async def test_invalid_manifests_are_manifest_invalid(registry: Registry) -> None:
    # One node for the whole family keeps this cheap; each case names itself on failure.
    for reason, body in INVALID_MANIFESTS.items():
        content_type = OCI_INDEX if b'"manifests"' in body else OCI_MANIFEST
        if reason in ("unknown media type", "media type not a string", "docker schema 1"):
            content_type = "application/json"
        response = await put_manifest(registry.client, NAME, "broken", body, content_type)
        assert response.status_code == 400, (reason, response.status_code, response.text[:200])
        assert_error(response, 400, "MANIFEST_INVALID")
    assert (await registry.client.get(f"/v2/{NAME}/manifests/broken")).status_code == 404


async def test_unknown_content_type_without_body_media_type_is_refused(
    registry: Registry,
) -> None:
    response = await put_manifest(
        registry.client, NAME, "v1", b'{"schemaVersion": 2}', "application/vnd.example+json"
    )
    assert_error(response, 400, "MANIFEST_INVALID")


# References that must exist


async def test_manifest_with_a_missing_layer_is_manifest_blob_unknown(registry: Registry) -> None:
    config, _ = await config_and_layer(registry)
    missing = descriptor(b"never pushed", OCI_LAYER)
    body = make_manifest(config, [missing])
    response = await put_manifest(registry.client, NAME, "v1", body, OCI_MANIFEST)
    assert_error(response, (400, 404), "MANIFEST_BLOB_UNKNOWN")
    assert (await registry.client.get(f"/v2/{NAME}/manifests/v1")).status_code == 404


async def test_manifest_with_a_missing_config_is_manifest_blob_unknown(
    registry: Registry,
) -> None:
    _, layer = await config_and_layer(registry)
    body = make_manifest(descriptor(b"{'missing': 1}", OCI_CONFIG), [layer])
    response = await put_manifest(registry.client, NAME, "v1", body, OCI_MANIFEST)
    assert_error(response, (400, 404), "MANIFEST_BLOB_UNKNOWN")


async def test_blobs_of_another_repository_do_not_count(registry: Registry) -> None:
    config, layer = await config_and_layer(registry, name="team/other")
    body = make_manifest(config, [layer])
    response = await put_manifest(registry.client, NAME, "v1", body, OCI_MANIFEST)
    assert_error(response, (400, 404), "MANIFEST_BLOB_UNKNOWN")


async def test_foreign_layers_need_not_be_in_the_registry(registry: Registry) -> None:
    config = b'{"os":"windows"}'
    await push_blob(registry.client, NAME, config)
    body = make_manifest(
        descriptor(config, DOCKER_CONFIG),
        [descriptor(b"windows base layer", DOCKER_FOREIGN_LAYER,
                    urls=["https://example.com/base.tar"])],
        media_type=DOCKER_MANIFEST,
    )
    response = await put_manifest(registry.client, NAME, "win", body, DOCKER_MANIFEST)
    assert response.status_code == 201


async def test_index_with_a_missing_child_is_manifest_unknown(registry: Registry) -> None:
    present = await push_image(registry.client, NAME, seed=1)
    absent = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"no such manifest"), "size": 16}
    body = make_index([present.descriptor(), absent])
    response = await put_manifest(registry.client, NAME, "multi", body, OCI_INDEX)
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert (await registry.client.get(f"/v2/{NAME}/manifests/multi")).status_code == 404


async def test_index_child_from_another_repository_is_manifest_unknown(
    registry: Registry,
) -> None:
    elsewhere = await push_image(registry.client, "team/other", seed=1)
    body = make_index([elsewhere.descriptor()])
    response = await put_manifest(registry.client, NAME, "multi", body, OCI_INDEX)
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_a_blob_deleted_before_the_manifest_push_is_missing(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    await registry.client.delete(f"/v2/{NAME}/blobs/{layer['digest']}")
    response = await put_manifest(
        registry.client, NAME, "v1", make_manifest(config, [layer]), OCI_MANIFEST
    )
    assert_error(response, (400, 404), "MANIFEST_BLOB_UNKNOWN")


# Subject


async def test_subject_is_answered_with_the_oci_subject_header(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    await push_blob(registry.client, NAME, b"{}")
    await push_blob(registry.client, NAME, b"signature")
    body = make_manifest(
        descriptor(b"{}", "application/vnd.oci.empty.v1+json"),
        [descriptor(b"signature", "application/octet-stream")],
        artifact_type="application/vnd.example.signature",
        subject=subject.descriptor(),
    )
    response = await put_manifest(registry.client, NAME, digest_of(body), body, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == subject.digest


async def test_manifest_without_subject_has_no_oci_subject_header(registry: Registry) -> None:
    config, layer = await config_and_layer(registry)
    response = await put_manifest(
        registry.client, NAME, "v1", make_manifest(config, [layer]), OCI_MANIFEST
    )
    assert response.status_code == 201
    assert "OCI-Subject" not in response.headers


async def test_subject_that_does_not_exist_yet_is_accepted(registry: Registry) -> None:
    missing = digest_of(b"the image is pushed later")
    artifact = await push_artifact(registry.client, NAME, missing)
    response = await registry.client.get(f"/v2/{NAME}/manifests/{artifact.digest}")
    assert response.status_code == 200
    assert json.loads(response.content)["subject"]["digest"] == missing


async def test_index_with_a_subject_is_accepted(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1", seed=1)
    child = await push_image(registry.client, NAME, seed=2)
    body = make_index([child.descriptor()], subject=subject.descriptor())
    response = await put_manifest(registry.client, NAME, digest_of(body), body, OCI_INDEX)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == subject.digest


# Reads of what is not there


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_unknown_tag_is_404_manifest_unknown(registry: Registry, method: str) -> None:
    await push_image(registry.client, NAME, "v1")
    response = await registry.client.request(method, f"/v2/{NAME}/manifests/v2")
    assert response.status_code == 404
    if method == "GET":
        assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_unknown_digest_is_404_manifest_unknown(registry: Registry) -> None:
    response = await registry.client.get(f"/v2/{NAME}/manifests/{digest_of(b'nothing')}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_manifest_of_another_repository_is_unknown_here(registry: Registry) -> None:
    pushed = await push_image(registry.client, "team/other", "v1")
    assert_error(await registry.client.get(f"/v2/{NAME}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert_error(
        await registry.client.get(f"/v2/{NAME}/manifests/{pushed.digest}"), 404, "MANIFEST_UNKNOWN"
    )


# Deletes


async def test_delete_by_digest_removes_the_manifest_and_its_tags(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME, "v1", seed=1)
    await put_manifest(registry.client, NAME, "latest", pushed.body, pushed.media_type)
    kept = await push_image(registry.client, NAME, "v2", seed=2)
    response = await registry.client.delete(f"/v2/{NAME}/manifests/{pushed.digest}")
    assert response.status_code == 202
    for reference in (pushed.digest, "v1", "latest"):
        response = await registry.client.get(f"/v2/{NAME}/manifests/{reference}")
        assert_error(response, 404, "MANIFEST_UNKNOWN")
    tags = await registry.client.get(f"/v2/{NAME}/tags/list")
    assert tags.json()["tags"] == ["v2"]
    await assert_served(registry, NAME, "v2", kept)


async def test_delete_by_tag_removes_only_the_tag(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME, "v1")
    await put_manifest(registry.client, NAME, "latest", pushed.body, pushed.media_type)
    response = await registry.client.delete(f"/v2/{NAME}/manifests/v1")
    assert response.status_code == 202
    assert_error(await registry.client.get(f"/v2/{NAME}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    await assert_served(registry, NAME, pushed.digest, pushed)
    await assert_served(registry, NAME, "latest", pushed)
    tags = await registry.client.get(f"/v2/{NAME}/tags/list")
    assert tags.json()["tags"] == ["latest"]


async def test_delete_of_an_unknown_manifest_is_404(registry: Registry) -> None:
    await push_image(registry.client, NAME, "v1")
    response = await registry.client.delete(f"/v2/{NAME}/manifests/{digest_of(b'none')}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    response = await registry.client.delete(f"/v2/{NAME}/manifests/nope")
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_a_reference_that_is_no_tag_is_an_unknown_manifest_to_get_and_head(
    registry: Registry,
) -> None:
    # The OCI conformance suite (v1.1.1, pull tests) fetches
    # `.INVALID_MANIFEST_NAME` and wants 404 MANIFEST_UNKNOWN: no manifest can
    # be stored under such a name, so to a reader it is simply not there.
    await push_image(registry.client, NAME, "v1")
    for reference in (".INVALID_MANIFEST_NAME", "-dash", "t" * 129, "a+b"):
        url = f"/v2/{NAME}/manifests/{reference}"
        get = await registry.client.get(url)
        assert_error(get, 404, "MANIFEST_UNKNOWN")
        head = await registry.client.head(url)
        assert (head.status_code, head.content) == (404, b"")


async def test_put_and_delete_by_a_reference_that_is_no_tag_stay_tag_invalid(
    registry: Registry,
) -> None:
    # A write names a tag to create or remove, so a malformed one is the
    # client's error (TAG_INVALID); the conformance suite's delete tests only
    # delete tags that were pushed, so they ask nothing else of an invalid one.
    pushed = await push_image(registry.client, NAME, "v1")
    url = f"/v2/{NAME}/manifests/.INVALID_MANIFEST_NAME"
    put = await put_manifest(registry.client, NAME, ".INVALID_MANIFEST_NAME", pushed.body,
                             pushed.media_type)
    assert_error(put, 400, "TAG_INVALID")
    delete = await registry.client.delete(url)
    assert_error(delete, 400, "TAG_INVALID")


async def test_a_deleted_manifest_can_be_pushed_again(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME, "v1")
    await registry.client.delete(f"/v2/{NAME}/manifests/{pushed.digest}")
    again = await put_manifest(registry.client, NAME, "v1", pushed.body, pushed.media_type)
    assert again.status_code == 201
    await assert_served(registry, NAME, "v1", pushed)


async def test_layers_of_a_manifest_stay_pullable_after_push(registry: Registry) -> None:
    pushed = await push_image(registry.client, NAME, "v1", layer_count=3)
    for layer in json.loads(pushed.body)["layers"]:
        response = await registry.client.get(f"/v2/{NAME}/blobs/{layer['digest']}")
        assert response.status_code == 200
        assert len(response.content) == layer["size"]
        assert layer["mediaType"] in (OCI_LAYER, DOCKER_LAYER)
