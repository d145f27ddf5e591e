"""Content builders and pushes shared by the API tests.

Media types are spelled out here rather than imported from the server, so a
test checks the server against the spec and not against itself.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

CHUNK = 64 * 1024  # the `registry` fixture's chunk size


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def assert_error(response: httpx.Response, status: int | tuple[int, ...], code: str) -> None:
    """The response is the spec's error envelope with `code`, at `status`."""
    allowed = (status,) if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert_envelope(response)
    codes = [e["code"] for e in response.json()["errors"]]
    assert code in codes, codes


def assert_envelope(response: httpx.Response) -> None:
    """`{"errors": [{"code": str, "message": str, "detail"?: any}, …]}` and nothing else."""
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    assert isinstance(body["errors"], list) and body["errors"], body
    for entry in body["errors"]:
        assert isinstance(entry["code"], str) and entry["code"].isupper(), entry
        assert isinstance(entry["message"], str), entry
        assert set(entry) <= {"code", "message", "detail"}, entry


async def push_blob(
    client: httpx.AsyncClient, name: str, data: bytes, algorithm: str = "sha256"
) -> str:
    """Push `data` in one monolithic POST; returns its digest."""
    digest = digest_of(data, algorithm)
    response = await client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data
    )
    assert response.status_code == 201, response.text
    return digest


async def start_upload(client: httpx.AsyncClient, name: str) -> str:
    """Open an upload session; returns its Location."""
    response = await client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["Location"]


def descriptor(data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def make_manifest(
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    *,
    media_type: str | None = OCI_MANIFEST,
    artifact_type: str | None = None,
    subject: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        doc["mediaType"] = media_type
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    doc["config"] = config
    doc["layers"] = layers
    if subject is not None:
        doc["subject"] = subject
    if annotations is not None:
        doc["annotations"] = annotations
    return json.dumps(doc, indent=2).encode()


def make_index(
    manifests: list[dict[str, Any]],
    *,
    media_type: str = OCI_INDEX,
    artifact_type: str | None = None,
    subject: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    doc["manifests"] = manifests
    if subject is not None:
        doc["subject"] = subject
    if annotations is not None:
        doc["annotations"] = annotations
    return json.dumps(doc).encode()


async def put_manifest(
    client: httpx.AsyncClient, name: str, reference: str, body: bytes, media_type: str
) -> httpx.Response:
    return await client.put(
        f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
    )


@dataclass(frozen=True)
class Pushed:
    """A manifest in the registry: its bytes, digest and media type."""

    body: bytes
    digest: str
    media_type: str

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        size = len(self.body)
        return {"mediaType": self.media_type, "digest": self.digest, "size": size, **extra}


async def push_image(
    client: httpx.AsyncClient,
    name: str,
    reference: str | None = None,
    *,
    seed: int = 0,
    layer_count: int = 1,
    docker: bool = False,
    artifact_type: str | None = None,
    config_media_type: str | None = None,
    subject: Pushed | None = None,
    annotations: dict[str, str] | None = None,
) -> Pushed:
    """Push a config, layers and a manifest naming them; tagged when `reference` is a tag."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    config_type = config_media_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
    await push_blob(client, name, config)
    layers = []
    for i in range(layer_count):
        layer = random_bytes(100 + i, seed=seed * 1000 + i)
        await push_blob(client, name, layer)
        layers.append(descriptor(layer, DOCKER_LAYER if docker else OCI_LAYER))
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    body = make_manifest(
        descriptor(config, config_type),
        layers,
        media_type=media_type,
        artifact_type=artifact_type,
        subject=subject.descriptor() if subject else None,
        annotations=annotations,
    )
    digest = digest_of(body)
    response = await put_manifest(client, name, reference or digest, body, media_type)
    assert response.status_code == 201, response.text
    return Pushed(body, digest, media_type)


async def push_artifact(
    client: httpx.AsyncClient,
    name: str,
    subject: Pushed | str,
    *,
    artifact_type: str | None = "application/vnd.example.sbom.v1",
    annotations: dict[str, str] | None = None,
    config_media_type: str = OCI_EMPTY,
    payload: bytes = b"payload",
) -> Pushed:
    """An OCI artifact (empty config, one blob) whose `subject` is `subject`."""
    empty = b"{}"
    await push_blob(client, name, empty)
    await push_blob(client, name, payload)
    subject_descriptor = (
        subject.descriptor()
        if isinstance(subject, Pushed)
        else {"mediaType": OCI_MANIFEST, "digest": subject, "size": 123}
    )
    body = make_manifest(
        descriptor(empty, config_media_type),
        [descriptor(payload, "application/octet-stream")],
        artifact_type=artifact_type,
        subject=subject_descriptor,
        annotations=annotations,
    )
    digest = digest_of(body)
    response = await put_manifest(client, name, digest, body, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return Pushed(body, digest, OCI_MANIFEST)


async def follow_pages(client: httpx.AsyncClient, url: str, key: str) -> list[list[str]]:
    """Every page of a paginated listing, following `Link: <…>; rel="next"`."""
    pages = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        assert response.status_code == 200, response.text
        pages.append(response.json()[key])
        link = response.headers.get("Link")
        if link is None:
            next_url = None
        else:
            assert link.endswith('; rel="next"'), link
            next_url = link[link.index("<") + 1 : link.index(">")]
        assert len(pages) < 100, "pagination does not end"
    return pages
