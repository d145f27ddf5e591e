"""A bare Raft driver bounds in bytes what it holds: its log, by snapshots
taken by bytes as well as by count, and what waits in its inbox.

Real drivers, write-ahead logs and snapshot files in the test's folder, over
the in-memory network of `test_raft_driver`: a member fed large entries
takes a snapshot long before `snapshot_every` entries, and its log, in
memory and on disk, stays near `snapshot_bytes` however many it is fed;
proposals past the uncommitted limit are refused, and a peer's appends the
loop has not taken yet hold back the connection that brings more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.raft.core import MAX_APPEND_BYTES, ProposalsBackedUp
from consensus.raft.driver import MAX_QUEUED_MESSAGE_BYTES, RaftDriver
from consensus.raft.messages import Message, MessageType
from consensus.raft.types import Entry, EntryKind
from tests.unit.test_raft_driver import (
    MemoryNetwork,
    PayloadList,
    _over_the_wire,
    bare_drivers,
    eventually,
)

KiB, MiB = 1 << 10, 1 << 20


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


async def propose_when_room(driver: RaftDriver, data: bytes) -> None:
    """Propose `data`, waiting while the driver refuses it for want of room."""
    while True:
        try:
            return driver.propose(data)
        except ProposalsBackedUp:
            await trio.sleep(0.01)


async def test_large_entries_are_snapshotted_by_bytes_and_the_log_on_disk_shrinks(
    tmp_path: Path,
) -> None:
    snapshot_bytes = 4 * MiB
    app = PayloadList()
    (driver,) = bare_drivers(
        tmp_path, MemoryNetwork(), {"n1": app},
        snapshot_every=10_000, snapshot_bytes=snapshot_bytes,
    )
    payloads = [bytes([n]) * (512 * KiB) for n in range(48)]  # 24 MiB, 48 entries
    wal = tmp_path / "n1" / "wal"
    largest_wal = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        await eventually(lambda: driver.leader == "n1")
        for payload in payloads:
            await propose_when_room(driver, payload)
            await eventually(lambda p=payload: app.payloads[-1:] == [p])
            largest_wal = max(largest_wal, folder_bytes(wal))
        await eventually(lambda: app.payloads == payloads)
        # Snapshots were taken by bytes: 48 entries are far from snapshot_every.
        await eventually(lambda: driver.snapshot_index >= len(payloads) - 8)
        nursery.cancel_scope.cancel()
    driver.close()
    # What the log holds, in memory and on disk, stays near snapshot_bytes:
    # the entries since the last snapshot, and on disk the segment before it.
    assert driver.status().log_bytes <= snapshot_bytes + 512 * KiB
    assert largest_wal <= 3 * snapshot_bytes, largest_wal
    assert folder_bytes(wal) <= 3 * snapshot_bytes


async def test_proposals_queued_for_the_core_are_refused_past_the_uncommitted_limit(
    tmp_path: Path,
) -> None:
    app = PayloadList()
    (driver,) = bare_drivers(
        tmp_path, MemoryNetwork(), {"n1": app}, max_uncommitted_bytes=2 * MiB
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        await eventually(lambda: driver.leader == "n1")
        # No checkpoint between these: the loop has not handed any to the core.
        driver.propose(b"a" * MiB)
        driver.propose(b"b" * MiB)
        with pytest.raises(ProposalsBackedUp):
            driver.propose(b"c")
        await eventually(lambda: len(app.payloads) == 2)
        driver.propose(b"c")  # room again once the others committed
        await eventually(lambda: app.payloads[-1:] == [b"c"])
        nursery.cancel_scope.cancel()
    driver.close()
    assert app.payloads == [b"a" * MiB, b"b" * MiB, b"c"]


def append_frame(index: int) -> dict:
    """n2, leading term 1, sends n1 entry `index` of the largest size one append carries."""
    entry = Entry(1, index, EntryKind.NORMAL, bytes([index]) * MAX_APPEND_BYTES)
    msg = Message(MessageType.APPEND, "n2", "n1", term=1, index=index - 1,
                  log_term=1 if index > 1 else 0, entries=(entry,), commit=0)
    return _over_the_wire({"t": "raft", "m": msg.to_wire()})


async def test_appends_a_busy_member_has_not_taken_hold_back_the_connection_bringing_more(
    tmp_path: Path,
) -> None:
    apps = {node_id: PayloadList() for node_id in ("n1", "n2", "n3")}
    driver = bare_drivers(tmp_path, MemoryNetwork(), apps)[0]  # n1, not running yet
    frames = [append_frame(index) for index in range(1, 7)]
    handled = 0

    async def deliver() -> None:  # what the transport does with one connection's frames
        nonlocal handled
        for frame in frames:
            await driver.transport.on_frame("n2", frame)
            handled += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(deliver)
        await trio.testing.wait_all_tasks_blocked()
        assert handled == MAX_QUEUED_MESSAGE_BYTES // MAX_APPEND_BYTES < len(frames)
        await nursery.start(driver.run)  # the loop takes them, and the rest come in
        await eventually(lambda: handled == len(frames))
        await eventually(lambda: driver.status().last_index == len(frames))
        nursery.cancel_scope.cancel()
    driver.close()
