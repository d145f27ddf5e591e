"""A leader takes forwarded requests only from members, and proposals only well-formed.

Any node holding the cluster secret can open a connection and send a
`propose` frame; what the leader appends is applied on every member and
after every restart. So the leader drops proposals from connections whose
sender is not a voter, and proposals that do not decode to a command. Each
test sends the bad frame and then a good one along the same link: frames
from one sender are handled in order, so once the good one is applied, the
bad one would have been appended before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from consensus.engine import PutBlob, Refused
from consensus.raft.driver import RaftDriver
from consensus.state import Refusal
from tests.unit.test_raft_driver import (
    Group,
    MemoryNetwork,
    MemoryTransport,
    PayloadList,
    bare_drivers,
    blob,
    eventually,
    holds,
    port_of,
)

IDS = ["n1", "n2", "n3"]


@asynccontextmanager
async def group_and_outsider(
    tmp_path: Path, apps: dict[str, PayloadList]
) -> AsyncIterator[tuple[RaftDriver, RaftDriver, MemoryTransport]]:
    """Three members with a leader, and a node outside them linked to that leader:
    yields (leader, a follower, the outsider's transport)."""
    network = MemoryNetwork()
    drivers = bare_drivers(tmp_path, network, apps)
    outsider = MemoryTransport(network, "n9", port_of("n9"))
    async with trio.open_nursery() as nursery:
        for driver in drivers:
            await nursery.start(driver.run)
        await nursery.start(outsider.run)
        await eventually(lambda: len({d.leader for d in drivers}) == 1 and drivers[0].leader)
        leader = next(d for d in drivers if d.leader == d.node_id)
        outsider.set_peers({leader.node_id: f"memory:{port_of(leader.node_id)}"})
        yield leader, next(d for d in drivers if d is not leader), outsider
        nursery.cancel_scope.cancel()
    for driver in drivers:
        driver.close()


async def test_a_proposal_forwarded_by_a_non_member_is_not_appended(tmp_path: Path) -> None:
    apps = {node_id: PayloadList() for node_id in IDS}
    async with group_and_outsider(tmp_path, apps) as (leader, member, outsider):
        with trio.fail_after(10):
            while b"from a member" not in apps[leader.node_id].payloads:
                outsider.send(leader.node_id, {"t": "propose", "d": b"from an outsider"})
                member.transport.send(leader.node_id, {"t": "propose", "d": b"from a member"})
                with trio.move_on_after(0.5):
                    await leader.wait_applied(leader.applied + 1)
        await eventually(lambda: all(a.payloads == apps["n1"].payloads for a in apps.values()))
        assert b"from an outsider" not in apps[leader.node_id].payloads


async def test_a_forwarded_proposal_that_is_no_command_is_not_appended(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    group = Group(tmp_path, nursery, ["n1", "n2", "n3"])
    await group.start_all()
    await group.settled()
    leader = await group.leader()
    applied: list[Any] = []
    report = leader._driver.on_applied

    def record(results: list[Any]) -> None:
        applied.extend(results)
        report(results)

    leader._driver.on_applied = record
    follower = group.followers(leader)[0]
    follower._driver.transport.send(leader.node_id, {"t": "propose", "d": b"\x93\x01\x02\x03"})
    command = blob(5)
    await follower.propose(command)  # forwarded along the same link, after the garbage
    await eventually(lambda: holds(leader, command))
    assert all(result.refusal is not Refusal.COMMAND_INVALID for _, result in applied)
    assert any(command_id == command.id for command_id, _ in applied)
    await group.stop_all()


async def test_a_command_no_leader_would_append_is_refused_at_once(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    group = Group(tmp_path, nursery, ["n1"])
    await group.start_all()
    leader = await group.leader()
    broken = PutBlob(repo="r", digest="sha256:" + "0" * 64, size=1, chunk_size=1,
                     chunks=["not a chunk id"])
    with trio.fail_after(1), pytest.raises(Refused) as refused:
        await leader.propose(broken)
    assert refused.value.refusal is Refusal.COMMAND_INVALID
    await group.stop_all()


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "conf", "op": "remove", "node": "LEADER"},
        {"t": "conf", "op": "add", "node": "n9"},
        {"t": "transfer", "to": "FOLLOWER"},
    ],
    ids=["remove-the-leader", "add-a-voter", "move-leadership"],
)
async def test_membership_and_leadership_requests_from_a_non_member_change_nothing(
    tmp_path: Path, frame: dict[str, str]
) -> None:
    apps = {node_id: PayloadList() for node_id in IDS}
    async with group_and_outsider(tmp_path, apps) as (leader, follower, outsider):
        names = {"LEADER": leader.node_id, "FOLLOWER": follower.node_id}
        sent = {key: names.get(value, value) for key, value in frame.items()}
        for _ in range(20):
            outsider.send(leader.node_id, sent)
            await trio.sleep(0.05)
        assert sorted(leader.committed_voters) == IDS
        assert leader.leader == leader.node_id
