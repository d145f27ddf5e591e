"""The real Raft driver and engine, whole groups of them, over an in-memory network.

Each member is a `RaftEngine` with its real write-ahead log, snapshot files
and SQLite state in the test's temporary folder; only the transport is
replaced, by `MemoryTransport`, which carries the same frames (msgpack-encoded
and decoded again) over trio memory channels and can cut a member off.
Ticks are short, so elections take a fraction of a second. The last test
runs bare `RaftDriver`s over an applier that is no registry at all.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from consensus.engine import PutBlob, RaftEngine, RaftSettings, StatePaths
from consensus.raft.driver import RaftDriver
from consensus.raft.transport import FrameHandler, SendFrame

SECRET = b"s" * 32


def _over_the_wire(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)


async def _no_receiver(sender: str, frame: Any) -> None:
    raise RuntimeError("no driver attached")


class MemoryNetwork:
    """Who listens where, and which members are cut off from everyone."""

    def __init__(self) -> None:
        self.listening: dict[str, MemoryTransport] = {}
        self.cut: set[str] = set()

    def route(self, sender: str, address: str) -> MemoryTransport | None:
        target = self.listening.get(address)
        if target is None or sender in self.cut or target.node_id in self.cut:
            return None
        return target


class MemoryTransport:
    """A `PeerTransport` over trio memory channels: best-effort frames, in order per sender."""

    def __init__(self, network: MemoryNetwork, node_id: str, port: int) -> None:
        self.network = network
        self.node_id = node_id
        self.port: int | None = port
        self.address = f"memory:{port}"
        self.on_frame: FrameHandler = _no_receiver
        self.on_learned: Callable[[], None] | None = None
        self.on_closed: Callable[[str, int], None] | None = None  # no connections to close here
        self.learned: dict[str, str] = {}
        self.rejected = 0
        self.dropped = 0
        self._peers: dict[str, str] = {}
        # Unbounded: no frame is dropped for a full queue (`dropped` stays 0).
        self._send, self._receive = trio.open_memory_channel[tuple[str, str, Any]](math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.network.listening[self.address] = self
        try:
            task_status.started()
            async for sender, address, frame in self._receive:
                if sender in self.network.cut or self.node_id in self.network.cut:
                    continue
                if self.learned.get(sender) != address:
                    self.learned[sender] = address
                    if sender not in self._peers and self.on_learned is not None:
                        self.on_learned()
                try:
                    await self.on_frame(sender, frame)
                except Exception:
                    self.rejected += 1  # the TCP transport would drop the connection
        finally:
            del self.network.listening[self.address]

    def set_peers(self, peers: dict[str, str]) -> None:
        self._peers = {k: v for k, v in peers.items() if k != self.node_id}

    def send(self, to: str, obj: Any) -> bool:
        address = self._peers.get(to)
        if address is None:
            return False
        target = self.network.route(self.node_id, address)
        if target is not None:  # else queued, then lost on the way, as on a broken link
            target._send.send_nowait((self.node_id, self.address, _over_the_wire(obj)))
        return True

    @asynccontextmanager
    async def stream_to(self, peer_id: str) -> AsyncIterator[SendFrame]:
        address = self._peers.get(peer_id)
        if address is None or self.network.route(self.node_id, address) is None:
            raise OSError(f"{peer_id} is unreachable")

        async def send(obj: Any) -> None:
            target = self.network.route(self.node_id, address)
            if target is None:
                raise trio.BrokenResourceError(f"{peer_id} went away")
            await target.on_frame(self.node_id, _over_the_wire(obj))

        yield send


def port_of(node_id: str) -> int:
    return 1000 + int(node_id.removeprefix("n"))


class Group:
    """Members of one Raft group, each started and stopped in its own cancel scope."""

    def __init__(self, folder: Path, nursery: trio.Nursery, ids: list[str], **tuning: Any) -> None:
        self.folder = folder
        self.nursery = nursery
        self.ids = ids
        self.tuning = {
            "tick_seconds": 0.01, "election_ticks": 10, "propose_timeout": 10.0, **tuning
        }
        self.network = MemoryNetwork()
        self.engines: dict[str, RaftEngine] = {}
        self._stops: dict[str, tuple[trio.CancelScope, trio.Event]] = {}

    def paths(self, node_id: str) -> StatePaths:
        root = self.folder / node_id
        root.mkdir(parents=True, exist_ok=True)
        return StatePaths(
            db=root / "state.db", wal=root / "wal", snapshots=root / "snapshots",
            incoming=root / "incoming",
        )

    def open(self, node_id: str, **overrides: Any) -> RaftEngine:
        settings = RaftSettings(
            node_id=node_id,
            raft_listen="unused:0",
            advertise_host="memory",
            secret=SECRET,
            peers={i: f"memory:{port_of(i)}" for i in self.ids},
            **{**self.tuning, **overrides},
        )
        transport = MemoryTransport(self.network, node_id, port_of(node_id))
        engine = RaftEngine(self.paths(node_id), settings, transport=transport)
        self.engines[node_id] = engine
        return engine

    async def start(self, node_id: str, **overrides: Any) -> RaftEngine:
        engine = self.engines.get(node_id) or self.open(node_id, **overrides)
        scope, stopped = trio.CancelScope(), trio.Event()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                with scope:
                    await engine.run(task_status=task_status)
            finally:
                stopped.set()

        await self.nursery.start(run)
        engine.http_advertise = f"http-{node_id}"
        self._stops[node_id] = (scope, stopped)
        return engine

    async def start_all(self) -> None:
        for node_id in self.ids:
            await self.start(node_id)

    async def stop(self, node_id: str) -> int:
        """Stop the member and close its files; returns the applied index its state holds."""
        scope, stopped = self._stops.pop(node_id)
        scope.cancel()
        await stopped.wait()
        engine = self.engines.pop(node_id)
        applied = engine.queries.applied_index()
        engine.close()
        return applied

    async def stop_all(self) -> dict[str, int]:
        return {node_id: await self.stop(node_id) for node_id in list(self._stops)}

    async def settled(self) -> None:
        """Every member registered its addresses, and every member applied that."""
        await eventually(
            lambda: all(len(e.members()) == len(self.engines) for e in self.engines.values())
        )

    async def leader(self) -> RaftEngine:
        """The member every running member agrees leads."""
        with trio.fail_after(10):
            while True:
                views = {e.leader() for e in self.engines.values()}
                if len(views) == 1 and (leader := views.pop()) in self.engines:
                    return self.engines[leader]
                await trio.sleep(0.01)

    def followers(self, leader: RaftEngine) -> list[RaftEngine]:
        return [e for node_id, e in self.engines.items() if node_id != leader.node_id]


@pytest.fixture
async def group_of_three(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Group]:
    group = Group(tmp_path, nursery, ["n1", "n2", "n3"])
    await group.start_all()
    await group.settled()
    yield group
    await group.stop_all()


def blob(n: int) -> PutBlob:
    return PutBlob(
        repo="library/app", digest=f"sha256:{n:064x}", size=n, chunk_size=8, chunks=[f"{n:064x}"]
    )


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def holds(engine: RaftEngine, *commands: PutBlob) -> bool:
    return all(engine.queries.blob(c.digest) is not None for c in commands)


async def propose_all(engine: RaftEngine, commands: list[PutBlob]) -> None:
    """Propose one after the other; each is acknowledged only once applied on `engine`."""
    for command in commands:
        await engine.propose(command)
        assert holds(engine, command)


async def until_everyone_holds(group: Group, commands: list[PutBlob]) -> None:
    for engine in group.engines.values():
        await eventually(lambda e=engine: holds(e, *commands))


async def test_three_members_elect_one_leader_and_apply_every_proposal_on_each(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    commands = [blob(n) for n in range(1, 21)]
    await propose_all(leader, commands)
    await until_everyone_holds(group_of_three, commands)
    engines = group_of_three.engines.values()
    await eventually(lambda: len({e.status()["applied_index"] for e in engines}) == 1)
    assert sum(e.status()["role"] == "leader" for e in group_of_three.engines.values()) == 1


async def test_a_proposal_on_a_follower_is_forwarded_to_the_leader_and_applied(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    follower = group_of_three.followers(leader)[0]
    command = blob(7)
    await follower.propose(command)
    assert holds(follower, command)
    await eventually(lambda: holds(leader, command))


async def test_a_barrier_on_a_follower_sees_every_write_committed_through_the_leader(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    followers = group_of_three.followers(leader)
    for n in range(1, 11):
        command = blob(n)
        await leader.propose(command)
        reader = followers[n % 2]
        await reader.barrier()
        assert holds(reader, command)
        found = await reader.lookup(lambda q, d=command.digest: q.blob(d))
        assert found is not None and found.digest == command.digest


async def test_a_member_that_fell_behind_the_compacted_log_catches_up_through_a_snapshot(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    group = Group(tmp_path, nursery, ["n1", "n2", "n3"], snapshot_every=5)
    await group.start_all()
    leader = await group.leader()
    laggard = group.followers(leader)[0]
    commands = [blob(n) for n in range(1, 31)]
    await leader.propose(commands[0])
    await eventually(lambda: holds(laggard, commands[0]))
    group.network.cut.add(laggard.node_id)
    behind = laggard.status()["applied_index"]
    await propose_all(leader, commands[1:])
    # The entries the laggard misses are gone from every other member's log, so
    # whoever leads when it comes back can only help it with a snapshot.
    others = [group.engines[n] for n in group.ids if n != laggard.node_id]
    await eventually(lambda: all(e.status()["snapshot_index"] > behind + 5 for e in others))
    group.network.cut.clear()
    await eventually(lambda: holds(laggard, *commands))
    # The state arrives before the install finishes recording its index.
    await eventually(lambda: laggard.status()["snapshot_index"] > behind)
    await group.stop_all()


async def test_a_restarted_group_resumes_exactly_where_its_state_left_off(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    commands = [blob(n) for n in range(1, 11)]
    await propose_all(leader, commands)
    await until_everyone_holds(group_of_three, commands)
    stopped = await group_of_three.stop_all()

    for node_id in group_of_three.ids:
        reopened = group_of_three.open(node_id)
        assert reopened.status()["applied_index"] == stopped[node_id]
        assert holds(reopened, *commands)
    await group_of_three.start_all()
    leader = await group_of_three.leader()
    more = blob(11)
    await leader.propose(more)
    await until_everyone_holds(group_of_three, [*commands, more])


async def test_leadership_moves_to_the_member_it_is_transferred_to(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    asker, target = group_of_three.followers(leader)
    await asker.transfer_leader(target.node_id)  # forwarded: the asker does not lead
    assert (await group_of_three.leader()) is target
    command = blob(3)
    await asker.propose(command)
    await eventually(lambda: holds(target, command))


async def test_a_joining_member_is_added_as_a_voter_and_receives_the_state(
    group_of_three: Group,
) -> None:
    leader = await group_of_three.leader()
    commands = [blob(n) for n in range(1, 6)]
    await propose_all(leader, commands)
    newcomer = await group_of_three.start("n4", join=True)
    follower = group_of_three.followers(leader)[0]
    await follower.add_member("n4", raft="memory:1004", http="http-n4")
    assert "n4" in leader.voters()
    await eventually(lambda: holds(newcomer, *commands))
    await eventually(lambda: "n4" in newcomer.voters())


async def test_every_raft_worker_thread_counts_against_the_engines_limiter(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiters: list[Any] = []
    run_sync = trio.to_thread.run_sync

    async def recording(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        limiters.append(kwargs.get("limiter"))
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", recording)
    group = Group(tmp_path, nursery, ["n1", "n2", "n3"], snapshot_every=5, disk_threads=3)
    await group.start_all()
    leader = await group.leader()
    await propose_all(leader, [blob(n) for n in range(1, 31)])  # saves in threads, snapshots
    await eventually(lambda: leader.status()["snapshot_index"] > 0)
    await group.stop_all()
    assert limiters
    assert all(isinstance(lim, trio.CapacityLimiter) for lim in limiters)
    assert {lim.total_tokens for lim in limiters} == {3}


class PayloadList:
    """An application Raft knows nothing about: the payloads applied, in log order."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.applied_index = 0

    def apply_batch(self, entries: list[tuple[int, bytes | None]]) -> list[Any]:
        for index, data in entries:
            if index > self.applied_index and data is not None:
                self.payloads.append(data)
            self.applied_index = max(self.applied_index, index)
        return [None] * len(entries)

    def export_snapshot(self, target: Path) -> int:
        applied, payloads = self.applied_index, list(self.payloads)
        target.write_bytes(msgpack.packb([applied, payloads]))
        return applied

    def import_snapshot(self, source: Path) -> None:
        self.applied_index, self.payloads = msgpack.unpackb(source.read_bytes())

    def raft_addresses(self) -> dict[str, str]:
        return {}  # the bootstrap addresses are all there is


def bare_drivers(
    folder: Path, network: MemoryNetwork, apps: dict[str, PayloadList], **options: Any
) -> list[RaftDriver]:
    """A bare `RaftDriver` for each of `apps`, over the memory network, with short
    ticks; `options` go to every driver."""
    drivers = []
    for node_id, app in apps.items():
        (folder / node_id / "incoming").mkdir(parents=True)
        drivers.append(RaftDriver(
            node_id,
            applier=app,
            transport=MemoryTransport(network, node_id, port_of(node_id)),
            wal_dir=folder / node_id / "wal",
            snapshot_dir=folder / node_id / "snapshots",
            incoming_dir=folder / node_id / "incoming",
            limiter=trio.CapacityLimiter(1),
            peers={i: f"memory:{port_of(i)}" for i in apps},
            tick_seconds=0.01,
            **options,
        ))
    return drivers


async def test_the_driver_replicates_an_application_it_knows_nothing_about(
    tmp_path: Path,
) -> None:
    network = MemoryNetwork()
    ids = ["n1", "n2", "n3"]
    apps = {node_id: PayloadList() for node_id in ids}
    drivers = bare_drivers(tmp_path, network, apps)
    async with trio.open_nursery() as nursery:
        for driver in drivers:
            await nursery.start(driver.run)
        await eventually(lambda: len({d.leader for d in drivers}) == 1 and drivers[0].leader)
        follower = next(d for d in drivers if d.leader != d.node_id)
        with trio.fail_after(10):
            while b"hello" not in apps[follower.node_id].payloads:
                follower.propose(b"hello")  # forwarded; asked again if a leader change lost it
                with trio.move_on_after(0.5):
                    await follower.wait_applied(follower.applied + 1)
        await eventually(lambda: all(a.payloads == apps["n1"].payloads for a in apps.values()))
        nursery.cancel_scope.cancel()
    for driver in drivers:
        driver.close()
