"""The content stored before a run and pulled back after it, byte for byte.

It lives in a repository the generated writes never touch (cases write and
delete only under `fuzz/`), so the run may read it in every way it likes and
must still hand back exactly what was stored.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass

import httpx

REPO = "fixture/app"
TAG = "v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_BYTES = 200 * 1024 + 17  # more than three 64 KiB chunks, the last one short


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Fixture:
    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def layer_digest(self) -> str:
        return digest_of(self.layer)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)

    @property
    def manifest_digest(self) -> str:
        return digest_of(self.manifest)

    @classmethod
    def make(cls, seed: int) -> Fixture:
        layer = random.Random(f"fixture-{seed}").randbytes(LAYER_BYTES)
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        manifest = image_manifest(config, [layer])
        return cls(layer, config, manifest)


def image_manifest(config: bytes, layers: list[bytes], **extra: object) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": digest_of(b), "size": len(b)} for b in layers
        ],
        **extra,
    }
    return json.dumps(doc, indent=2).encode()


def _retry(request: httpx.Request, client: httpx.Client, want: int, timeout: float) -> None:
    """Until the node answers `want` (a fresh cluster may still be electing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = client.send(request)
            if response.status_code == want:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{request.method} {request.url}: {last}")
        time.sleep(0.2)


def store(fixture: Fixture, url: str, timeout: float = 30.0, tag: str = TAG) -> None:
    """Push the fixture's blobs and manifest (tagged) through the node at `url`."""
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for blob in (fixture.config, fixture.layer):
            request = client.build_request(
                "POST", f"/v2/{REPO}/blobs/uploads/", params={"digest": digest_of(blob)},
                content=blob,
            )
            _retry(request, client, 201, timeout)
        request = client.build_request(
            "PUT", f"/v2/{REPO}/manifests/{tag}", content=fixture.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        _retry(request, client, 201, timeout)


def problems(fixture: Fixture, url: str, timeout: float = 20.0, tag: str = TAG) -> list[str]:
    """What does not pull back byte-identical from the node at `url` (empty when all does).

    A follower may still be applying the last writes of the run, so each read
    is retried for a while before it counts as lost.
    """
    wanted = {
        f"/v2/{REPO}/manifests/{tag}": fixture.manifest,
        f"/v2/{REPO}/manifests/{fixture.manifest_digest}": fixture.manifest,
        f"/v2/{REPO}/blobs/{fixture.layer_digest}": fixture.layer,
        f"/v2/{REPO}/blobs/{fixture.config_digest}": fixture.config,
    }
    found = []
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for path, body in wanted.items():
            deadline = time.monotonic() + timeout
            while True:
                try:
                    response = client.get(path, headers={"Accept": OCI_MANIFEST})
                    got = f"status {response.status_code}, {len(response.content)} B"
                    if response.status_code == 200 and response.content == body:
                        break
                except httpx.HTTPError as exc:
                    got = repr(exc)
                if time.monotonic() > deadline:
                    found.append(f"{url}{path}: not the stored {len(body)} B ({got})")
                    break
                time.sleep(0.25)
    return found
