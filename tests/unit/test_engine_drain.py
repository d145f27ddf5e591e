"""The engine's drain and self-removal: what a draining node needs from consensus.

A drained node finishes by leaving the group. Once removed, its requests are
no longer taken (forwarded requests are accepted only from voters) and it
does not learn that its removal committed, so a member asked to remove
itself refuses, and another member removes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from consensus.engine import MembershipRefused, RaftEngine
from tests.unit.test_raft_driver import Group, blob, eventually, holds


@pytest.fixture
async def group_of_three(tmp_path: Path, nursery: trio.Nursery):
    group = Group(tmp_path, nursery, ["n1", "n2", "n3"])
    await group.start_all()
    await group.settled()
    yield group
    await group.stop_all()


def gone_everywhere(group: Group, node_id: str, engines: list[RaftEngine]) -> bool:
    return all(
        node_id not in e.voters() and node_id not in {m.node_id for m in e.members()}
        for e in engines
    )


async def test_drain_flag_is_replicated_and_cancelled(group_of_three: Group) -> None:
    leader = await group_of_three.leader()
    follower = group_of_three.followers(leader)[0]
    await follower.drain_member(leader.node_id)
    assert follower.draining() == {leader.node_id}
    await eventually(lambda: all(e.draining() == {leader.node_id}
                                 for e in group_of_three.engines.values()))
    await leader.drain_member(leader.node_id, draining=False)
    await eventually(lambda: all(not e.draining() for e in group_of_three.engines.values()))


async def test_drain_of_an_unknown_member_is_refused(group_of_three: Group) -> None:
    leader = await group_of_three.leader()
    with pytest.raises(MembershipRefused, match="n9 is not a member"):
        await leader.drain_member("n9")
    assert leader.draining() == set()


@pytest.mark.parametrize("who", ["follower", "leader"])
async def test_a_member_asked_to_remove_itself_refuses_and_nothing_changes(
    group_of_three: Group, who: str
) -> None:
    leader = await group_of_three.leader()
    leaving = leader if who == "leader" else group_of_three.followers(leader)[0]
    with pytest.raises(MembershipRefused, match="cannot remove itself"):
        await leaving.remove_member(leaving.node_id)
    assert sorted(leaving.voters()) == ["n1", "n2", "n3"]


async def test_a_draining_member_removed_by_another_leaves_with_its_flag(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    leaving = group_of_three.followers(leader)[0]
    await leaving.drain_member(leaving.node_id)
    await leader.remove_member(leaving.node_id)
    staying = [e for e in group_of_three.engines.values() if e is not leaving]
    await eventually(lambda: gone_everywhere(group_of_three, leaving.node_id, staying))
    assert all(not e.draining() for e in staying)
    command = blob(7)
    await (await _leader_of(staying)).propose(command)
    await eventually(lambda: all(holds(e, command) for e in staying))
    await trio.sleep(1.5)  # a re-registration by the removed node would come within this
    assert gone_everywhere(group_of_three, leaving.node_id, staying)


async def _leader_of(engines: list[RaftEngine]) -> RaftEngine:
    by_id = {e.node_id: e for e in engines}
    with trio.fail_after(10):
        while True:
            views = {e.leader() for e in engines}
            if len(views) == 1 and (leader := views.pop()) in by_id:
                return by_id[leader]
            await trio.sleep(0.01)
