"""The three-node cluster of docker-compose.cluster.yml, driven as a user drives it.

The image is built from the repository's Dockerfile on a Debian base made here
(no image can be pulled) with wheels made by the host's pip; the cluster comes
up under a project name of its own, on free client ports, and is taken down
with its volumes whatever happens. Runs under Debian's docker-compose 1.29, and
under `docker compose` (v2) too where the engine's CLI has it.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.clients import Docker, run
from tests.e2e.images import rootfs_tar
from tests.e2e.offline_build import build_wheelhouse, ensure_base_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.cluster.yml"
NODES = ("node1", "node2", "node3")
HEALTHY_WITHIN = 240.0  # seconds; a generous bound so a stuck node fails rather than hangs
BUILD_TIMEOUT = 1200.0


def compose_commands() -> list[tuple[str, ...]]:
    """docker-compose 1.29 always (CI installs it; missing, the test fails), plus
    the v2 plugin when this engine's CLI has one."""
    commands: list[tuple[str, ...]] = [("docker-compose",)]
    try:
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True,
                                timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return commands
    if plugin.returncode == 0:
        commands.append(("docker", "compose"))
    return commands


@dataclass(frozen=True)
class ComposeCluster:
    """One compose project of docker-compose.cluster.yml and its published ports."""

    command: tuple[str, ...]
    project: str
    ports: dict[str, int]
    env_file: Path  # the settings, as a user would keep them in a .env file

    def __call__(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return run(*self.command, "--env-file", str(self.env_file), "-f", str(COMPOSE_FILE),
                   "-p", self.project, *args, timeout=timeout)

    def registry(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    def container(self, node: str) -> str:
        return self("ps", "-q", node).stdout.strip()

    def health(self, node: str) -> str:
        container = self.container(node)
        if not container:
            return "no container"
        return run("docker", "inspect", "--format", "{{.State.Status}}/{{.State.Health.Status}}",
                   container).stdout.strip()

    def wait_healthy(self, *nodes: str) -> None:
        """Until docker's healthcheck (GET /readyz) passes on every one of `nodes`."""
        deadline = time.monotonic() + HEALTHY_WITHIN
        while True:
            states = {node: self.health(node) for node in nodes}
            if all(state == "running/healthy" for state in states.values()):
                return
            if time.monotonic() > deadline:
                logs = self("logs", "--tail", "40", *nodes).stdout
                raise AssertionError(f"not healthy after {HEALTHY_WITHIN:.0f} s: {states}\n{logs}")
            time.sleep(2)


@pytest.fixture(params=compose_commands(), ids=lambda command: " ".join(command))
def cluster(request: pytest.FixtureRequest, docker: Docker,
            tmp_path: Path) -> Iterator[ComposeCluster]:
    settings = {
        "FLOTILLA_BASE": ensure_base_image(docker),
        "FLOTILLA_WHEELHOUSE": str(build_wheelhouse(PROJECT_ROOT)),
        **{f"FLOTILLA_PORT{k}": str(free_port()) for k in (1, 2, 3)},
    }
    ports = {node: int(settings[f"FLOTILLA_PORT{k}"]) for k, node in enumerate(NODES, 1)}
    env_file = tmp_path / "cluster.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    compose = ComposeCluster(request.param, f"flotilla-e2e-{uuid.uuid4().hex[:10]}", ports,
                             env_file)
    try:
        compose("up", "-d", "--build", timeout=BUILD_TIMEOUT)
        yield compose
    finally:
        # Containers, volumes and the network go; the built image stays as a cache.
        compose("down", "-v", "--remove-orphans", "--timeout", "10")


def test_compose_cluster_serves_pushes_through_any_node_and_survives_a_killed_node(
    cluster: ComposeCluster, docker: Docker, local_images: list[str]
) -> None:
    cluster.wait_healthy(*NODES)
    # The generated cluster secret is readable by the nodes' user alone.
    secret = cluster("exec", "-T", "node1", "stat", "-c", "%a %U", "/secret/cluster-secret")
    assert secret.stdout.split() == ["600", "flotilla"]
    repository = f"compose/app-{uuid.uuid4().hex[:8]}"
    first, second = uuid.uuid4().hex, uuid.uuid4().hex

    # Pushed through node 1, pulled and run through node 3.
    pushed = f"{cluster.registry('node1')}/{repository}:1"
    local_images.append(pushed)
    image_id = docker.import_rootfs(rootfs_tar({"etc/token": first.encode()}), pushed)
    docker("push", pushed)
    docker.remove(pushed)
    via_node3 = f"{cluster.registry('node3')}/{repository}:1"
    local_images.append(via_node3)
    docker("pull", via_node3)
    assert docker.image_id(via_node3) == image_id
    assert docker("run", "--rm", via_node3, "cat", "/etc/token").stdout == first

    # Node 1 killed: node 2 still serves the first tag and takes a second one.
    cluster("kill", "node1")
    assert cluster.health("node1").startswith("exited/")
    docker.remove(via_node3)
    via_node2 = f"{cluster.registry('node2')}/{repository}:1"
    local_images.append(via_node2)
    docker("pull", via_node2)
    assert docker("run", "--rm", via_node2, "cat", "/etc/token").stdout == first
    pushed_while_down = f"{cluster.registry('node2')}/{repository}:2"
    local_images.append(pushed_while_down)
    second_id = docker.import_rootfs(rootfs_tar({"etc/token": second.encode()}),
                                     pushed_while_down)
    docker("push", pushed_while_down)

    # Node 1 started again catches up: it serves the tag pushed while it was down.
    cluster("start", "node1")
    cluster.wait_healthy("node1")
    docker.remove(pushed_while_down)
    caught_up = f"{cluster.registry('node1')}/{repository}:2"
    local_images.append(caught_up)
    docker("pull", caught_up)
    assert docker.image_id(caught_up) == second_id
    assert docker("run", "--rm", caught_up, "cat", "/etc/token").stdout == second
