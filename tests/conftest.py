"""Options and fixtures shared by every test folder.

`registry` runs a node inside the test's trio run, on an ephemeral loopback
port; `node_process` starts a real `flotilla serve` process, for tests that
kill it or that drive it with docker and skopeo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import settings

from node.app import RunningNode, serve
from node.config import Config
from scripts.benchmarks.processes import free_port

ROOT = Path(__file__).resolve().parent.parent

# The log scan: every credential recorded (the `secrets_seen` fixture) is looked for in
# every log line the suite writes.
pytest_plugins = ["tests.secret_scan"]

# Disk-bound examples (fsync) take as long as a shared machine makes them:
# no per-example deadline, so a slow disk is not mistaken for a failure.
settings.register_profile("flotilla", deadline=None)
settings.load_profile("flotilla")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seeds",
        type=int,
        default=2000,
        help="how many seeded clusters the Raft simulator runs",
    )


@dataclass
class Registry:
    """A node running in this test's trio run, and a client pointed at it."""

    node: RunningNode
    client: httpx.AsyncClient
    data: Path

    @property
    def url(self) -> str:
        return self.node.url


@pytest.fixture
async def registry(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Registry]:
    config = Config(
        data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024, tick_ms=20
    )
    node = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        yield Registry(node, client, config.data)
    node.cancel_scope.cancel()


@dataclass
class NodeProcess:
    """A `flotilla serve` process on a loopback port; restartable over the same data."""

    data: Path
    port: int
    extra: list[str] = field(default_factory=list)
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"  # "https" for a node given --tls-cert
    verify: Any = True  # what a client checks its certificate against (httpx's verify)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> NodeProcess:
        self.log = self.data.parent / f"{self.data.name}.log"
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "serve", "--data", str(self.data),
             "--listen", self.address, *self.extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1,
                             verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "node", free_port()).start()
    yield node
    node.stop()


def pytest_configure(config: pytest.Config) -> None:
    # Nodes started as subprocesses import the project from the checkout.
    os.environ.setdefault("PYTHONPATH", str(ROOT))


# When the suite runs in parallel (`-n 2 --dist loadfile`), a module is one unit of
# work: its tests run in order on one worker, as they do in one process (some share a
# module-scoped cluster and build on what the test before them left).
SLOW_FIRST = ("e2e", "chaos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The real-client and chaos modules go first: they are the longest, and a worker
    # that started one while the other took everything else would end the run alone.
    def late(item: pytest.Item) -> bool:
        return item.path.relative_to(ROOT / "tests").parts[0] not in SLOW_FIRST

    items.sort(key=late)


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount takes it: "64m") at `mount`, for a disk that
    really fills up; needs root. Unmounted lazily after use, so a node that still
    has a file open there does not keep it mounted."""
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
