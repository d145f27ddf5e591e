"""The docker CLI pushes to, pulls from and runs images out of a real node."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.conftest import NodeProcess
from tests.e2e.clients import Docker
from tests.e2e.images import rootfs_tar

pytestmark = pytest.mark.e2e

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def pushed_digest(push_output: str) -> str:
    """The manifest digest docker prints at the end of a push."""
    match = re.search(r"digest: (sha256:[0-9a-f]{64}) size: \d+", push_output)
    assert match, f"no digest line in docker push output:\n{push_output}"
    return match.group(1)


def fetch_manifest(node: NodeProcess, repo: str, reference: str) -> httpx.Response:
    return httpx.get(f"{node.url}/v2/{repo}/manifests/{reference}",
                     headers={"Accept": MANIFEST_TYPES})


def test_push_then_pull_after_removing_local_image_gives_same_image(
    docker: Docker, node_process: NodeProcess, repo: str, local_images: list[str]
) -> None:
    reference = f"{node_process.address}/{repo}:1.0"
    token = uuid.uuid4().hex
    local_images.append(reference)
    image_id = docker.import_rootfs(rootfs_tar({"etc/token": token.encode()}), reference)

    push = docker("push", reference).stdout
    assert "Pushed" in push
    digest = pushed_digest(push)
    manifest = fetch_manifest(node_process, repo, "1.0")
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == digest

    docker.remove(reference)
    assert not docker.exists(reference)
    pull = docker("pull", reference).stdout
    assert digest in pull
    assert docker.image_id(reference) == image_id

    run = docker("run", "--rm", reference, "sh", "-c", f"echo hello from {repo}; cat /etc/token")
    assert run.stdout == f"hello from {repo}\n{token}"


def test_second_push_of_same_image_finds_layer_already_exists(
    docker: Docker, node_process: NodeProcess, base_image: str, repo: str,
    local_images: list[str],
) -> None:
    reference = f"{node_process.address}/{repo}:latest"
    local_images.append(reference)
    docker("tag", base_image, reference)

    first = docker("push", reference).stdout
    second = docker("push", reference).stdout

    assert "Pushed" in first
    assert "Layer already exists" in second
    assert "Pushed" not in second
    assert pushed_digest(first) == pushed_digest(second)


def test_multi_layer_image_pushes_pulls_and_runs(
    docker: Docker, node_process: NodeProcess, base_image: str, repo: str,
    local_images: list[str],
) -> None:
    # Two `docker commit`s over the imported image: three layers, no `docker build`.
    stage = f"flotilla-e2e/{repo.replace('/', '-')}-stage:1"
    reference = f"{node_process.address}/{repo}:layered"
    local_images.extend([stage, reference])
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    docker.commit_change(base_image, f"echo {first} > /first.txt", into=stage)
    docker.commit_change(stage, f"echo {second} > /second.txt", into=reference)
    layers = docker.layers(reference)
    assert len(layers) == 3
    image_id = docker.image_id(reference)

    digest = pushed_digest(docker("push", reference).stdout)
    manifest = fetch_manifest(node_process, repo, digest)
    assert manifest.status_code == 200
    described = manifest.json()["layers"]
    assert len(described) == 3
    for layer in described:
        blob = httpx.head(f"{node_process.url}/v2/{repo}/blobs/{layer['digest']}")
        assert blob.status_code == 200
        assert int(blob.headers["Content-Length"]) == layer["size"]

    docker.remove(reference, stage)
    assert not docker.exists(reference)
    docker("pull", reference)
    assert docker.image_id(reference) == image_id
    assert docker.layers(reference) == layers
    run = docker("run", "--rm", reference, "sh", "-c", "cat /first.txt /second.txt")
    assert run.stdout == f"{first}\n{second}\n"


def test_run_pulls_image_by_digest_when_not_present_locally(
    docker: Docker, node_process: NodeProcess, repo: str, local_images: list[str]
) -> None:
    tagged = f"{node_process.address}/{repo}:v1"
    local_images.append(tagged)
    docker.import_rootfs(rootfs_tar({"etc/motd": b"pinned\n"}), tagged)
    digest = pushed_digest(docker("push", tagged).stdout)
    docker.remove(tagged)

    pinned = f"{node_process.address}/{repo}@{digest}"
    local_images.append(pinned)
    run = docker("run", "--rm", pinned, "sh", "-c", "echo by digest; cat /etc/motd")
    assert run.stdout.endswith("by digest\npinned\n")


def test_push_to_second_repository_mounts_layers_from_first(
    docker: Docker, node_process: NodeProcess, base_image: str, repo: str,
    local_images: list[str],
) -> None:
    source = f"{node_process.address}/{repo}/source:1"
    target = f"{node_process.address}/{repo}/target:1"
    local_images.extend([source, target])
    docker("tag", base_image, source)
    docker("tag", base_image, target)

    docker("push", source)
    second = docker("push", target).stdout

    assert f"Mounted from {repo}/source" in second
    layer = fetch_manifest(node_process, f"{repo}/target", "1").json()["layers"][0]["digest"]
    blob = httpx.head(f"{node_process.url}/v2/{repo}/target/blobs/{layer}")
    assert blob.status_code == 200
