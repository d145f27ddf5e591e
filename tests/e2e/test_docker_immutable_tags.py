"""A real `docker push` that would move an immutable tag fails and says why."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from tests.conftest import ROOT, NodeProcess
from tests.e2e.clients import Docker
from tests.e2e.images import rootfs_tar

pytestmark = pytest.mark.e2e


def test_docker_push_of_a_moved_immutable_tag_fails_naming_the_rule(
    docker: Docker, node_process: NodeProcess, repo: str, local_images: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "tags", "immutable", "set", repo,
         "--except", "^latest$", "--url", node_process.url],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    reference = f"{node_process.address}/{repo}:1.0"
    local_images.append(reference)
    docker.import_rootfs(rootfs_tar({"etc/which": b"first"}), reference)
    docker("push", reference)
    first = httpx.get(f"{node_process.url}/v2/{repo}/manifests/1.0",
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json,"
                               " application/vnd.oci.image.manifest.v1+json"})
    assert first.status_code == 200

    docker.import_rootfs(rootfs_tar({"etc/which": uuid.uuid4().hex.encode()}), reference)
    moved = docker("push", reference, check=False)
    assert moved.returncode != 0
    output = moved.stdout + moved.stderr
    assert "immutable" in output and repo in output, output
    again = httpx.get(f"{node_process.url}/v2/{repo}/manifests/1.0",
                      headers={"Accept": first.headers["Content-Type"]})
    assert again.headers["Docker-Content-Digest"] == first.headers["Docker-Content-Digest"]
