"""`/v2/<name>/referrers/<digest>`: the manifests whose `subject` is that digest."""

from __future__ import annotations

from tests.api.content import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    digest_of,
    follow_pages,
    make_index,
    push_artifact,
    push_image,
    put_manifest,
)
from tests.conftest import Registry

NAME = "team/app"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


async def referrers(registry: Registry, subject: str, **params: str) -> dict:
    response = await registry.client.get(f"/v2/{NAME}/referrers/{subject}", params=params)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    return index


async def test_referrers_of_an_unknown_subject_is_an_empty_index(registry: Registry) -> None:
    index = await referrers(registry, digest_of(b"nothing refers to this"))
    assert index["manifests"] == []


async def test_referrers_in_an_unknown_repository_is_an_empty_index(registry: Registry) -> None:
    response = await registry.client.get(f"/v2/team/never/referrers/{digest_of(b'x')}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []


async def test_referrers_lists_every_manifest_with_that_subject(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    sbom = await push_artifact(
        registry.client, NAME, subject, artifact_type=SBOM,
        annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    )
    signature = await push_artifact(
        registry.client, NAME, subject, artifact_type=SIGNATURE, payload=b"sig"
    )
    await push_image(registry.client, NAME, "v2", seed=9)  # refers to nothing
    index = await referrers(registry, subject.digest)
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sbom.digest, signature.digest}
    assert by_digest[sbom.digest] == {
        "mediaType": OCI_MANIFEST,
        "digest": sbom.digest,
        "size": len(sbom.body),
        "artifactType": SBOM,
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    assert by_digest[signature.digest]["artifactType"] == SIGNATURE
    assert "annotations" not in by_digest[signature.digest]
    assert "OCI-Filters-Applied" not in (
        await registry.client.get(f"/v2/{NAME}/referrers/{subject.digest}")
    ).headers


async def test_artifact_type_falls_back_to_the_config_media_type(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    artifact = await push_artifact(
        registry.client, NAME, subject,
        artifact_type=None, config_media_type="application/vnd.example.config.v1+json",
    )
    (descriptor,) = (await referrers(registry, subject.digest))["manifests"]
    assert descriptor["digest"] == artifact.digest
    assert descriptor["artifactType"] == "application/vnd.example.config.v1+json"


async def test_index_referrer_without_artifact_type_reports_none(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1", seed=1)
    child = await push_image(registry.client, NAME, seed=2)
    body = make_index([child.descriptor()], subject=subject.descriptor(),
                      annotations={"purpose": "attestations"})
    response = await put_manifest(registry.client, NAME, digest_of(body), body, OCI_INDEX)
    assert response.status_code == 201
    (descriptor,) = (await referrers(registry, subject.digest))["manifests"]
    assert descriptor["mediaType"] == OCI_INDEX
    assert descriptor["digest"] == digest_of(body)
    assert descriptor["size"] == len(body)
    assert "artifactType" not in descriptor
    assert descriptor["annotations"] == {"purpose": "attestations"}


async def test_index_referrer_with_artifact_type_reports_it(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1", seed=1)
    child = await push_image(registry.client, NAME, seed=2)
    body = make_index([child.descriptor()], subject=subject.descriptor(), artifact_type=SBOM)
    await put_manifest(registry.client, NAME, digest_of(body), body, OCI_INDEX)
    (descriptor,) = (await referrers(registry, subject.digest))["manifests"]
    assert descriptor["artifactType"] == SBOM


async def test_artifact_type_filter_keeps_matches_and_says_so(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    sbom = await push_artifact(registry.client, NAME, subject, artifact_type=SBOM)
    await push_artifact(registry.client, NAME, subject, artifact_type=SIGNATURE, payload=b"s")
    response = await registry.client.get(
        f"/v2/{NAME}/referrers/{subject.digest}", params={"artifactType": SBOM}
    )
    assert response.status_code == 200
    assert response.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in response.json()["manifests"]] == [sbom.digest]
    none = await registry.client.get(
        f"/v2/{NAME}/referrers/{subject.digest}", params={"artifactType": "application/x-none"}
    )
    assert none.status_code == 200
    assert none.json()["manifests"] == []
    assert none.headers["OCI-Filters-Applied"] == "artifactType"


async def test_referrers_page_with_n_and_links_that_keep_the_filter(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    sboms = [
        await push_artifact(registry.client, NAME, subject, artifact_type=SBOM, payload=b"%d" % i)
        for i in range(5)
    ]
    signature = await push_artifact(
        registry.client, NAME, subject, artifact_type=SIGNATURE, payload=b"sig"
    )
    url = f"/v2/{NAME}/referrers/{subject.digest}"
    pages = await follow_pages(registry.client, f"{url}?n=2", "manifests")
    assert [len(p) for p in pages] == [2, 2, 2]
    listed = [d["digest"] for page in pages for d in page]
    assert listed == sorted(d.digest for d in [*sboms, signature])

    first = await registry.client.get(url, params={"n": 2, "artifactType": SBOM})
    link = first.headers["Link"]
    assert link.startswith(f"<{url}?") and link.endswith('>; rel="next"')
    assert "artifactType=" in link
    pages = await follow_pages(registry.client, f"{url}?n=2&artifactType={SBOM}", "manifests")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [d["digest"] for page in pages for d in page] == sorted(d.digest for d in sboms)
    second = await registry.client.get(link[1 : link.index(">")])
    assert second.headers["OCI-Filters-Applied"] == "artifactType"


async def test_referrers_with_n_0_is_an_empty_index_and_a_bad_n_is_400(
    registry: Registry,
) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    await push_artifact(registry.client, NAME, subject)
    url = f"/v2/{NAME}/referrers/{subject.digest}"
    empty = await registry.client.get(url, params={"n": 0})
    assert empty.status_code == 200 and empty.json()["manifests"] == []
    assert "Link" not in empty.headers
    bad = await registry.client.get(url, params={"n": "-1"})
    assert_error(bad, 400, "PAGINATION_NUMBER_INVALID")


async def test_referrer_pushed_before_its_subject_is_listed(registry: Registry) -> None:
    later = digest_of(b"image pushed later")
    artifact = await push_artifact(registry.client, NAME, later)
    (descriptor,) = (await referrers(registry, later))["manifests"]
    assert descriptor["digest"] == artifact.digest


async def test_referrers_are_per_repository(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    await push_image(registry.client, "team/other", "v1")  # same content, other repository
    await push_artifact(registry.client, "team/other", subject)
    assert (await referrers(registry, subject.digest))["manifests"] == []


async def test_a_deleted_referrer_is_no_longer_listed(registry: Registry) -> None:
    subject = await push_image(registry.client, NAME, "v1")
    artifact = await push_artifact(registry.client, NAME, subject)
    assert len((await referrers(registry, subject.digest))["manifests"]) == 1
    assert (
        await registry.client.delete(f"/v2/{NAME}/manifests/{artifact.digest}")
    ).status_code == 202
    assert (await referrers(registry, subject.digest))["manifests"] == []


async def test_referrers_with_a_sha512_subject(registry: Registry) -> None:
    subject = digest_of(b"a sha512-addressed image", "sha512")
    artifact = await push_artifact(registry.client, NAME, subject)
    (descriptor,) = (await referrers(registry, subject))["manifests"]
    assert descriptor["digest"] == artifact.digest


async def test_referrers_with_a_malformed_digest_is_400(registry: Registry) -> None:
    for digest in ("sha256:abc", "sha256:" + "A" * 64, "md5:" + "0" * 32, "latest"):
        response = await registry.client.get(f"/v2/{NAME}/referrers/{digest}")
        assert_error(response, 400, "DIGEST_INVALID")


async def test_referrers_with_a_malformed_name_is_400(registry: Registry) -> None:
    response = await registry.client.get(f"/v2/Team/App/referrers/{digest_of(b'x')}")
    assert_error(response, 400, "NAME_INVALID")
