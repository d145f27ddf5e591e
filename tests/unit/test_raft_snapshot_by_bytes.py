"""A bare Raft driver snapshots by bytes as well as by count, and bounds the
proposals it queues in bytes.

Real drivers, write-ahead logs and snapshot files in the test's folder, over
the in-memory network of `test_raft_driver`: a member fed large entries
takes a snapshot long before `snapshot_every` entries, and its log, in
memory and on disk, stays near `snapshot_bytes` however many it is fed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from consensus.raft.core import ProposalsBackedUp
from consensus.raft.driver import RaftDriver
from tests.unit.test_raft_driver import MemoryNetwork, PayloadList, bare_drivers, eventually

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
