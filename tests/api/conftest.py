"""Fixtures of the API tests: a fresh single node per test, cheap to start.

The API tests check the protocol, not durability (tests/e2e kills nodes for
that), and each starts its own node, so two costs that say nothing about
the API are cut here. The node's data lives on tmpfs when the machine has
one, so the fsyncs of a node's start and of every push do not make the run
time depend on whatever else the disk is doing. And the Raft tick is 2 ms:
a lone node still has to win its election before it answers a write or a
read barrier, and at the shared fixture's 20 ms that wait was most of each
test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from node.app import serve
from node.config import Config
from tests.conftest import Registry

TMPFS = Path("/dev/shm")


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    if not TMPFS.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="flotilla-api-", dir=TMPFS))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def registry(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Registry]:
    config = Config(data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024, tick_ms=2)
    node = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        yield Registry(node, client, config.data)
    node.cancel_scope.cancel()
