"""Fixtures for tests that drive real docker and skopeo against a `flotilla serve` process.

A missing client or an unreachable docker daemon fails these tests: the
project's rule is that e2e never skips (`.ci/run` installs the clients and
starts dockerd). The base image is imported once per session; every test
gets its own repository name and removes the local images it made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.clients import ClientFailed, Docker, Skopeo
from tests.e2e.images import find_busybox, rootfs_tar

# Two workers of a parallel run log in to their own nodes at the same time: each keeps
# its clients' logins in files of its own (docker's config.json, podman's and skopeo's
# auth.json), so no login or logout is lost to another's read-modify-write.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _logins = tempfile.mkdtemp(prefix=f"flotilla-logins-{os.environ['PYTEST_XDIST_WORKER']}-")
    os.environ["DOCKER_CONFIG"] = os.path.join(_logins, "docker")
    os.environ["REGISTRY_AUTH_FILE"] = os.path.join(_logins, "auth.json")
    with open(os.environ["REGISTRY_AUTH_FILE"], "w") as _auth:  # podman stats it first
        _auth.write('{"auths": {}}')


@pytest.fixture(scope="session")
def docker() -> Docker:
    if shutil.which("docker") is None:
        pytest.fail("docker CLI not found: install docker.io (.ci/run does)", pytrace=False)
    try:
        Docker()("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (ClientFailed, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    else:
        return Docker()
    pytest.fail(f"docker daemon not reachable; e2e tests do not skip:\n{problem}", pytrace=False)


@pytest.fixture(scope="session")
def skopeo() -> Skopeo:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo not found: install skopeo (.ci/run does)", pytrace=False)
    return Skopeo()


@pytest.fixture(scope="session")
def busybox_rootfs() -> bytes:
    try:
        find_busybox()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    return rootfs_tar()


@pytest.fixture(scope="session")
def base_image(docker: Docker, busybox_rootfs: bytes) -> Iterator[str]:
    """A one-layer busybox image, imported once for the whole session."""
    reference = f"flotilla-e2e/base:{uuid.uuid4().hex[:12]}"
    docker.import_rootfs(busybox_rootfs, reference)
    yield reference
    docker("image", "rm", "--force", reference, check=False)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test (or concurrent run) uses."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"e2e/{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def local_images(docker: Docker) -> Iterator[list[str]]:
    """References a test made in the local docker store; removed when it ends."""
    made: list[str] = []
    yield made
    if made:
        docker("image", "rm", "--force", *made, check=False)
