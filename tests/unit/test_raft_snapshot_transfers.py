"""Snapshot transfers that never finish leave nothing behind on the receiver.

A member receives a snapshot in pieces, each written to a `recv-*` temporary
file in its incoming folder. These tests run a real driver's receiver behind
a real TCP transport on loopback, send it pieces of transfers that stop half
way, and check that neither temp files nor open file handles are left over
once the connection is gone or the transfer went quiet, and that one sender
cannot hold many transfers open at once.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from blake3 import blake3

from consensus.raft.driver import RaftDriver
from consensus.raft.messages import Message, MessageType
from consensus.raft.snapshots import TRANSFERS_PER_SENDER
from consensus.raft.transport import Transport
from consensus.raft.types import SnapshotMeta
from tests.unit.test_raft_driver import eventually
from tests.unit.test_raft_transport import Member, closed_by_other_end, connect_as

SECRET = b"s" * 32


class Nothing:
    """An empty application: these tests never get as far as applying anything."""

    applied_index = 0

    def apply_batch(self, entries: list[tuple[int, bytes | None]]) -> list[Any]:
        return [None] * len(entries)

    def export_snapshot(self, target: Path) -> int:
        target.write_bytes(msgpack.packb([]))
        return 0

    def import_snapshot(self, source: Path) -> None:
        pass

    def raft_addresses(self) -> dict[str, str]:
        return {}


class Receiver:
    def __init__(self, driver: RaftDriver, transport: Transport, incoming: Path) -> None:
        self.driver = driver
        self.transport = transport
        self.incoming = incoming

    def temp_files(self) -> list[str]:
        return sorted(p.name for p in self.incoming.glob("recv-*"))

    def open_handles(self) -> list[str]:
        """Files of the incoming folder this process holds open."""
        names = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(self.incoming)):
                names.append(target)
        return names

    async def connect(self, sender: str) -> Member:
        return await connect_as(self.transport, f"{sender}@127.0.0.1:1", SECRET)


@pytest.fixture
async def receiver(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Receiver]:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    transport = Transport("n1", SECRET, "127.0.0.1:0")
    driver = RaftDriver(
        "n1",
        applier=Nothing(),
        transport=transport,
        wal_dir=tmp_path / "wal",
        snapshot_dir=tmp_path / "snapshots",
        incoming_dir=incoming,
        limiter=trio.CapacityLimiter(2),
        peers={"n1": "127.0.0.1:1"},
    )
    await nursery.start(transport.run)
    yield Receiver(driver, transport, incoming)
    driver.close()


def first_piece(transfer: str) -> dict[str, Any]:
    return {"t": "snap", "x": transfer, "d": b"x" * 1000, "o": 0, "done": False, "m": None}


async def test_transfers_cut_off_with_their_connection_leave_no_temp_files_or_handles(
    receiver: Receiver,
) -> None:
    streams = []
    for n in range(3):
        stream = await receiver.connect("leader")
        await stream.send_frames(first_piece(f"t{n}"))
        streams.append(stream)
    await eventually(lambda: len(receiver.temp_files()) == 3)
    for stream in streams:
        await stream.aclose()
    await eventually(lambda: not receiver.temp_files() and not receiver.open_handles())


async def test_one_sender_cannot_hold_more_than_a_few_transfers_open(receiver: Receiver) -> None:
    streams = []
    for n in range(50):
        stream = await receiver.connect("leader")
        await stream.send_frames(first_piece(f"t{n}"))
        streams.append(stream)
    await trio.sleep(0.2)
    assert len(receiver.temp_files()) <= TRANSFERS_PER_SENDER
    assert len(receiver.open_handles()) <= TRANSFERS_PER_SENDER
    # Another sender is not starved by the first one's transfers.
    other = await receiver.connect("other")
    await other.send_frames(first_piece("mine"))
    await eventually(lambda: len(receiver.temp_files()) == TRANSFERS_PER_SENDER + 1)
    for stream in [*streams, other]:
        await stream.aclose()
    await eventually(lambda: not receiver.temp_files() and not receiver.open_handles())


async def test_a_transfer_gone_quiet_is_dropped_and_cannot_resume(receiver: Receiver) -> None:
    receiver.driver.snapshots.transfer_idle_seconds = 0.3
    quiet = await receiver.connect("leader")
    await quiet.send_frames(first_piece("a"), first_piece("b"))
    await eventually(lambda: len(receiver.temp_files()) == 2)
    await trio.sleep(0.5)
    # The connection is still open, but its transfers have had no piece for
    # longer than the limit: the next transfer to arrive sweeps them away.
    fresh = await receiver.connect("other")
    await fresh.send_frames(first_piece("c"))
    await eventually(lambda: len(receiver.temp_files()) == 1)
    assert len(receiver.open_handles()) == 1
    # A piece of a dropped transfer is refused rather than written to a new,
    # truncated file that would later pass for the whole snapshot.
    await quiet.send_frames({"t": "snap", "x": "a", "d": b"y", "o": 1000, "done": False,
                             "m": None})
    assert await closed_by_other_end(quiet)
    assert len(receiver.temp_files()) == 1
    await fresh.aclose()
    await quiet.aclose()
    await eventually(lambda: not receiver.temp_files() and not receiver.open_handles())


def snapshot_pieces(data: bytes, digest: bytes, meta: SnapshotMeta) -> list[dict[str, Any]]:
    """The frames a leader sends for a snapshot of `data` at `meta`, vouched for by `digest`."""
    wire = Message(MessageType.SNAPSHOT, "leader", "n1", term=meta.term, snapshot=meta).to_wire()
    return [
        {"t": "snap", "x": "s1", "d": data[:1000], "o": 0, "done": False, "m": None},
        {"t": "snap", "x": "s1", "d": data[1000:], "o": 1000, "done": False, "m": None},
        {"t": "snap", "x": "s1", "d": b"", "o": len(data), "done": True, "m": wire,
         "h": digest},
    ]


def snapshot_files(receiver: Receiver) -> list[str]:
    return sorted(p.name for p in (receiver.incoming.parent / "snapshots").glob("snap-*"))


async def test_a_snapshot_that_does_not_match_its_digest_is_never_installed(
    receiver: Receiver,
) -> None:
    data = os.urandom(5000)
    meta = SnapshotMeta(7, 1, ("leader", "n1"))
    damaged = data[:2500] + bytes([data[2500] ^ 1]) + data[2501:]
    stream = await receiver.connect("leader")
    await stream.send_frames(*snapshot_pieces(damaged, blake3(data).digest(), meta))
    assert await closed_by_other_end(stream)
    await stream.aclose()
    await eventually(lambda: not receiver.temp_files() and not receiver.open_handles())
    assert snapshot_files(receiver) == []
    # The same transfer, with bytes that match, is taken.
    again = await receiver.connect("leader")
    await again.send_frames(*snapshot_pieces(data, blake3(data).digest(), meta))
    await eventually(lambda: any(name.endswith(".meta") for name in snapshot_files(receiver)))
    await again.aclose()
    await eventually(lambda: not receiver.temp_files() and not receiver.open_handles())
