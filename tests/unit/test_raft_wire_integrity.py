"""Frames on an authenticated Raft connection cannot be forged, replayed, reordered or damaged.

A relay sits between two real transports on loopback. It forwards the real
handshake untouched, so the connection is one a member really opened, and
then misbehaves once, as someone on the path who never knew the cluster
secret could: it injects a frame of its own, replays or swaps real ones, or
flips a byte. The receiver must drop that connection before the frame
reaches its handler, and the sender's next connection (which the relay
leaves alone) must carry traffic again. Send queues are bounded in bytes.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import Any

import msgpack
import pytest
import trio

from consensus.raft import transport as wire
from consensus.raft.transport import FrameReader, Transport
from tests.unit.test_raft_transport import SECRET, Inbox, start, wait_for

FORGED = {"t": "raft", "forged": True}
# The frame layout on the wire: a header (the length, then its tag) and the
# payload followed by its tag.
TAG = wire.TAG_BYTES
HEADER = wire.FRAME_HEADER
MISCHIEF = ["inject_old_format", "inject_wrong_mac", "replay", "swap", "flip_payload",
            "flip_length"]


def old_format_frame(obj: Any) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def wrong_mac_frame(obj: Any) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + os.urandom(TAG) + payload + os.urandom(TAG)


class Relay:
    """A TCP relay that lets the handshake through, then plays `mischief` on its
    `tampered`-th connection only."""

    def __init__(self, target_port: int, mischief: str, tampered: int = 1) -> None:
        self.target_port = target_port
        self.mischief = mischief
        self.tampered = tampered
        self.connections = 0
        self.port: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._relay, listeners, task_status=task_status)

    async def _relay(self, client: trio.SocketStream) -> None:
        self.connections += 1
        mischief = self.mischief if self.connections == self.tampered else None
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, server, client, nursery.cancel_scope)
            nursery.start_soon(self._frames, client, server, mischief, nursery.cancel_scope)

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream,
                    done: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def _frames(self, client: trio.SocketStream, server: trio.SocketStream,
                      mischief: str | None, done: trio.CancelScope) -> None:
        reader = FrameReader(client)
        try:
            # The dialler's half of the handshake: its identity, nonce and proof.
            length = await reader.read_exactly(4)
            rest = await reader.read_exactly(struct.unpack(">I", length)[0] + 64)
            await server.send_all(length + rest)
            if mischief == "inject_old_format":
                await server.send_all(old_format_frame(FORGED))
            elif mischief == "inject_wrong_mac":
                await server.send_all(wrong_mac_frame(FORGED))
            held: bytes | None = None
            n = 0
            while True:
                header = await reader.read_exactly(HEADER)
                frame = header + await reader.read_exactly(
                    struct.unpack(">I", header[:4])[0] + TAG)
                n += 1
                if n == 1 and mischief == "replay":
                    frame += frame
                elif n == 1 and mischief == "swap":
                    held = frame
                    continue
                elif n == 2 and held is not None:
                    frame += held
                elif n == 1 and mischief == "flip_payload":
                    middle = HEADER + (len(frame) - HEADER - TAG) // 2
                    frame = frame[:middle] + bytes([frame[middle] ^ 0x01]) + frame[middle + 1:]
                elif n == 1 and mischief == "flip_length":
                    # The top byte: the frame now claims 16 MiB more than it has.
                    frame = bytes([frame[0] ^ 0x01]) + frame[1:]
                await server.send_all(frame)
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()


def numbered(n: int) -> dict[str, Any]:
    return {"n": n, "pad": b"x" * 200}


@pytest.mark.parametrize("mischief", MISCHIEF)
async def test_tampering_on_the_path_drops_the_connection_and_nothing_is_applied(
    nursery: trio.Nursery, mischief: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver, inbox = await start(nursery, "b")
    relay = Relay(receiver.port, mischief)
    await nursery.start(relay.run)
    sender, _ = await start(nursery, "a")
    sender.set_peers({"b": f"127.0.0.1:{relay.port}"})
    sent = 0

    def resumed() -> bool:
        return relay.connections >= 2 and any(f["n"] >= resume_from for _, f in inbox.frames)

    def tampered_frame_delivered() -> bool:
        order = [frame.get("n") for _, frame in inbox.frames]
        return any(frame != numbered(frame.get("n", -1)) for _, frame in inbox.frames) or (
            order != sorted(set(order)))

    resume_from = 1 << 30
    with trio.fail_after(10):
        while not resumed() and not tampered_frame_delivered():
            sender.send("b", numbered(sent))
            sent += 1
            if receiver.rejected and resume_from == 1 << 30:
                resume_from = sent
            await trio.sleep(0.01)
    # Its bad frame reached nobody, and only the tampered connection was dropped.
    frames = [frame for _, frame in inbox.frames]
    assert FORGED not in frames
    assert all(frame == numbered(frame["n"]) for frame in frames)  # nothing altered
    order = [frame["n"] for frame in frames]
    assert order == sorted(set(order))  # nothing twice, nothing out of order
    assert receiver.rejected == 1
    # The operator is told once, and told why.
    mac_warnings = [r for r in caplog.records
                    if r.levelno == logging.WARNING and "MAC" in r.getMessage()]
    assert len(mac_warnings) == 1


async def test_a_bulk_stream_is_sealed_like_the_raft_link(nursery: trio.Nursery) -> None:
    receiver, inbox = await start(nursery, "b")
    relay = Relay(receiver.port, "flip_payload", tampered=2)
    await nursery.start(relay.run)
    sender, _ = await start(nursery, "a")
    sender.set_peers({"b": f"127.0.0.1:{relay.port}"})
    await wait_for(lambda: relay.connections == 1)  # the Raft link, left alone
    async with sender.stream_to("b") as send:  # a snapshot's connection, tampered with
        await send(numbered(0))
        await wait_for(lambda: receiver.rejected == 1)
    assert inbox.frames == []
    async with sender.stream_to("b") as send:
        await send(numbered(1))
    await wait_for(lambda: inbox.frames)
    assert inbox.frames == [("a", numbered(1))]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_send_queue_to_an_unreachable_peer_stays_within_its_byte_cap(
    nursery: trio.Nursery,
) -> None:
    cap = 4 << 20
    sender = Transport("a", SECRET, "127.0.0.1:0", Inbox(), queue_bytes=cap)
    await nursery.start(sender.run)
    sender.set_peers({"b": f"127.0.0.1:{closed_port()}"})
    frame = b"x" * (256 << 10)
    accepted = sum(sender.send("b", frame) for _ in range(400))  # 100 MiB offered
    assert accepted * len(frame) <= cap
    assert accepted >= cap // len(frame) - 1
    assert sender.dropped == 400 - accepted
    assert 0 < sender.queued_bytes <= cap
    # Letting the peer go releases what was queued for it.
    sender.set_peers({})
    assert sender.queued_bytes == 0


async def test_a_frame_larger_than_the_byte_cap_still_goes_through_an_empty_queue(
    nursery: trio.Nursery,
) -> None:
    receiver, inbox = await start(nursery, "b")
    sender = Transport("a", SECRET, "127.0.0.1:0", Inbox(), queue_bytes=1 << 20)
    await nursery.start(sender.run)
    sender.set_peers({"b": f"127.0.0.1:{receiver.port}"})
    big = os.urandom(3 << 20)
    assert sender.send("b", {"big": big})
    await wait_for(lambda: inbox.frames, timeout=10)
    assert inbox.frames == [("a", {"big": big})]
    await wait_for(lambda: sender.queued_bytes == 0)
