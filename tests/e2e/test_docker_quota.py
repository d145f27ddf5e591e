"""A real `docker push` into a namespace over its quota fails with the quota's message."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, NodeProcess
from tests.e2e.clients import Docker
from tests.e2e.images import rootfs_tar

pytestmark = pytest.mark.e2e


def test_docker_push_over_the_quota_shows_the_quota_and_stores_nothing(
    docker: Docker, node_process: NodeProcess, repo: str, local_images: list[str]
) -> None:
    subprocess.run(
        [sys.executable, "-m", "node.cli", "quota", "set", repo, "--bytes", "64KiB",
         "--url", node_process.url, "--secret-file", str(node_process.data / "secret")],
        check=True, cwd=ROOT, capture_output=True, timeout=60,
    )
    reference = f"{node_process.address}/{repo}:1.0"
    local_images.append(reference)
    docker.import_rootfs(rootfs_tar({"etc/padding": b"p" * 200_000}), reference)

    push = docker("push", reference, check=False)
    assert push.returncode != 0
    output = push.stdout + push.stderr
    assert "denied" in output and f"quota {repo}:" in output, output
    manifest = httpx.get(f"{node_process.url}/v2/{repo}/manifests/1.0")
    assert manifest.status_code == 404
