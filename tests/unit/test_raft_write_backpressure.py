"""A write Raft has no room for is not queued, and a client is told to retry.

Real engines over the in-memory network of `test_raft_driver`: a leader
cut off from its followers cannot commit, so the entries it takes pile up
uncommitted; past `max_uncommitted_bytes` the next write waits for room
outside Raft's queues and, when none comes within `propose_timeout`, is
refused with `Overloaded` (503 UNAVAILABLE with Retry-After to a client);
writes go through again once the followers are back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from consensus.engine import NoQuorum, Overloaded, PutManifest
from node.api import errors
from tests.unit.test_raft_driver import Group, eventually

MiB = 1 << 20


def manifest(n: int, size: int) -> PutManifest:
    body = bytes([n]) * size
    return PutManifest(
        repo="library/app", digest="sha256:" + hashlib.sha256(body).hexdigest(),
        media_type="application/vnd.oci.image.manifest.v1+json", body=body, tag=f"v{n}",
    )


async def test_a_leader_that_cannot_commit_refuses_writes_past_the_uncommitted_limit(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # A lease (2 s) long enough that the cut-off leader still leads while the
    # refused write waits out its propose_timeout.
    group = Group(tmp_path, nursery, ["n1", "n2", "n3"], tick_seconds=0.02, election_ticks=100,
                  max_uncommitted_bytes=2 * MiB, propose_timeout=0.5)
    await group.start_all()
    await group.settled()
    leader = await group.leader()
    first, second = manifest(1, 3 * MiB // 2), manifest(2, 3 * MiB // 2)
    group.network.cut.update(e.node_id for e in group.followers(leader))

    done = trio.Event()

    async def write_first() -> None:
        while True:  # as a client would, until the followers are back
            try:
                await leader.propose(first)
            except NoQuorum:
                continue
            done.set()
            return

    nursery.start_soon(write_first)
    await eventually(lambda: leader.status()["uncommitted_bytes"] > MiB)
    with pytest.raises(Overloaded):
        await leader.propose(second)
    assert leader.leader() == leader.node_id  # refused for room, not for leadership

    assert leader.status()["uncommitted_bytes"] < 2 * MiB  # the refused write never got in

    group.network.cut.clear()
    await done.wait()
    await leader.propose(second)
    for engine in group.engines.values():
        await eventually(lambda e=engine: e.queries.manifest("library/app", second.digest))
    await group.stop_all()


def test_overloaded_reaches_a_client_as_503_unavailable_with_retry_after() -> None:
    mapped = errors.as_registry_error(Overloaded("full"))
    assert (mapped.http_status, mapped.code) == (503, "UNAVAILABLE")
    assert mapped.headers["Retry-After"] == "1"
