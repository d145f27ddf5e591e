"""A node's memory stays bounded while blobs far larger than it stream through.

Bytes move in chunk-sized buffers, and the allocator is told to keep reusing
them (`node.tuning`); a node that instead kept every worker thread's buffers,
or held a blob whole, would show it here as a high-water mark that grows with
the blob. The node is a real `flotilla serve` process; its peak resident
size (`VmHWM`) is read from /proc after pushes and concurrent pulls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
import trio

from tests.conftest import NodeProcess

pytestmark = pytest.mark.e2e

MiB = 1 << 20
BLOB = 384 * MiB
CHUNK = 8 * MiB  # the default chunk size
WINDOW = 4  # the default fetch window
PUSH_PEAK_MIB = 200  # the single-node goal: a push never holds a blob, only pieces of it
# A pull holds its window of chunks fetched ahead, the one being sent, and one
# being read: that much more per concurrent pull, and nothing that grows with
# the blob.
PER_PULL_MIB = (WINDOW + 2) * CHUNK // MiB


def peak_rss_mib(node: NodeProcess) -> float:
    assert node.proc is not None
    with open(f"/proc/{node.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def pieces(seed: int) -> Iterator[bytes]:
    """BLOB bytes, 1 MiB at a time, never all in this process at once."""
    block = hashlib.shake_256(str(seed).encode()).digest(MiB)
    for i in range(BLOB // MiB):
        yield i.to_bytes(8, "big") + block[8:]


def digest_of(seed: int) -> str:
    sha = hashlib.sha256()
    for piece in pieces(seed):
        sha.update(piece)
    return "sha256:" + sha.hexdigest()


def push(url: str, seed: int) -> str:
    digest = digest_of(seed)
    with httpx.Client(base_url=url, timeout=120) as http:
        started = http.post("/v2/mem/blobs/uploads/")
        assert started.status_code == 202
        done = http.put(
            started.headers["Location"], params={"digest": digest}, content=pieces(seed),
            headers={"Content-Length": str(BLOB), "Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
    return digest


async def pull(url: str, digest: str) -> None:
    sha, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(timeout=120) as http:
        async with http.stream("GET", f"{url}/v2/mem/blobs/{digest}") as response:
            assert response.status_code == 200
            async for piece in response.aiter_raw():
                sha.update(piece)
                size += len(piece)
    assert (size, "sha256:" + sha.hexdigest()) == (BLOB, digest)


def test_peak_memory_stays_bounded_under_large_pushes_and_pulls(
    node_process: NodeProcess,
) -> None:
    digests = [push(node_process.url, seed) for seed in (1, 2)]
    after_pushes = peak_rss_mib(node_process)
    assert after_pushes <= PUSH_PEAK_MIB, (
        f"node peaked at {after_pushes:.0f} MiB while pushing {BLOB // MiB} MiB blobs"
    )

    async def three_pulls() -> None:
        async with trio.open_nursery() as nursery:
            for digest in (*digests, digests[0]):
                nursery.start_soon(pull, node_process.url, digest)

    trio.run(three_pulls)
    peak = peak_rss_mib(node_process)
    limit = after_pushes + 3 * PER_PULL_MIB
    assert peak <= limit, (
        f"three concurrent pulls of {BLOB // MiB} MiB raised the node's peak from "
        f"{after_pushes:.0f} to {peak:.0f} MiB (allowed: {limit:.0f})"
    )
