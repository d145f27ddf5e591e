"""The Raft transport: only holders of the cluster secret get a frame in."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio

from consensus.raft.transport import (
    MAGIC,
    NONCE_BYTES,
    FrameReader,
    Transport,
    client_handshake,
    encode_frame,
)

SECRET = b"s" * 32


class Inbox:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []
        self.arrived = trio.Event()

    async def __call__(self, sender: str, frame: Any) -> None:
        if frame == "explode":
            raise ValueError("handler refuses this frame")
        self.frames.append((sender, frame))
        self.arrived.set()


async def start(
    nursery: trio.Nursery, node_id: str, secret: bytes = SECRET
) -> tuple[Transport, Inbox]:
    inbox = Inbox()
    transport = Transport(node_id, secret, "127.0.0.1:0", inbox)
    await nursery.start(transport.run)
    return transport, inbox


async def wait_for(condition, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def test_frames_flow_both_ways_between_holders_of_the_secret(nursery: trio.Nursery) -> None:
    a, inbox_a = await start(nursery, "a")
    b, inbox_b = await start(nursery, "b")
    a.set_peers({"b": f"127.0.0.1:{b.port}"})
    b.set_peers({"a": f"127.0.0.1:{a.port}"})
    for i in range(100):
        assert a.send("b", {"n": i, "data": b"\x00\xff" * i})
    b.send("a", ["hello", 1])
    await wait_for(lambda: len(inbox_b.frames) == 100 and inbox_a.frames)
    assert [f["n"] for _, f in inbox_b.frames] == list(range(100))
    assert inbox_b.frames[5] == ("a", {"n": 5, "data": b"\x00\xff" * 5})
    assert inbox_a.frames == [("b", ["hello", 1])]


async def test_peer_with_wrong_secret_delivers_nothing(nursery: trio.Nursery) -> None:
    good, inbox = await start(nursery, "good")
    bad, _ = await start(nursery, "bad", secret=b"x" * 32)
    bad.set_peers({"good": f"127.0.0.1:{good.port}"})
    bad.send("good", "forged")
    await wait_for(lambda: good.rejected >= 1)
    await trio.sleep(0.1)
    assert inbox.frames == []


async def test_raw_garbage_before_handshake_is_refused_and_node_keeps_serving(
    nursery: trio.Nursery,
) -> None:
    node, inbox = await start(nursery, "n")
    stream = await trio.open_tcp_stream("127.0.0.1", node.port)
    greeting = await stream.receive_some(len(MAGIC) + NONCE_BYTES)
    assert greeting.startswith(MAGIC)
    # A frame sent without a handshake is read as a (bogus) handshake and refused.
    await stream.send_all(encode_frame({"type": "append"}) + b"\x00" * 100)
    await wait_for(lambda: node.rejected >= 1)
    await stream.aclose()
    peer, _ = await start(nursery, "p")
    peer.set_peers({"n": f"127.0.0.1:{node.port}"})
    peer.send("n", "still works")
    await wait_for(lambda: inbox.frames)
    assert inbox.frames == [("p", "still works")]


@pytest.mark.parametrize("bad", ["oversized", "undecodable", "handler_error"])
async def test_authenticated_peer_sending_garbage_is_disconnected(
    nursery: trio.Nursery, bad: str
) -> None:
    node, inbox = await start(nursery, "n")
    node.max_frame = 1024
    peer, _ = await start(nursery, "p")
    peer.set_peers({"n": f"127.0.0.1:{node.port}"})
    peer.send("n", "before")
    await wait_for(lambda: inbox.frames)
    if bad == "oversized":
        peer.send("n", b"x" * 4096)
    elif bad == "undecodable":
        peer._peers["n"].send.send_nowait(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    else:
        peer.send("n", "explode")
    await wait_for(lambda: node.rejected >= 1)
    # The sender notices the broken link, reconnects, and later frames arrive again
    # (frames written into the dead connection are lost: delivery is best effort).
    with trio.fail_after(10):
        while len(inbox.frames) < 2:
            peer.send("n", "after")
            await trio.sleep(0.05)
    assert [f for _, f in inbox.frames][:2] == ["before", "after"]


async def test_frames_to_unknown_peer_are_refused_not_queued(nursery: trio.Nursery) -> None:
    node, _ = await start(nursery, "n")
    assert node.send("nobody", "x") is False


async def connect_as(node: Transport, identity: str) -> trio.SocketStream:
    """A client connection that did the real handshake, as a member would."""
    assert node.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", node.port)
    await client_handshake(stream, FrameReader(stream), SECRET, identity)
    return stream


async def closed_by_other_end(stream: trio.SocketStream) -> bool:
    with trio.fail_after(5):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return True


GARBAGE_AFTER_HANDSHAKE = {
    # 81 91 01 01: a map whose key is a list; msgpack raises TypeError (unhashable).
    "list_as_map_key": struct.pack(">I", 4) + bytes.fromhex("81910101"),
    "map_as_map_key": struct.pack(">I", 3) + bytes.fromhex("818001"),
    "deep_nesting": struct.pack(">I", 100_001) + b"\x91" * 100_000 + b"\x01",
    "ext_type": struct.pack(">I", 3) + bytes.fromhex("d40501"),
    "bad_timestamp_ext": struct.pack(">I", 4) + bytes.fromhex("d5ff0000"),
    "trailing_bytes": struct.pack(">I", 2) + b"\x01\x02",
    "huge_declared_length": struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 16,
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE_AFTER_HANDSHAKE))
async def test_malformed_frame_after_handshake_closes_only_that_connection(
    nursery: trio.Nursery, garbage: str
) -> None:
    node, inbox = await start(nursery, "n")
    bad = await connect_as(node, "mallory@127.0.0.1:1")
    await bad.send_all(GARBAGE_AFTER_HANDSHAKE[garbage])
    assert await closed_by_other_end(bad)
    await bad.aclose()
    assert node.rejected == 1
    # The listener survived: a well-behaved member still gets its frame through.
    good = await connect_as(node, "p@127.0.0.1:2")
    await good.send_all(encode_frame({"hello": "after"}))
    await wait_for(lambda: inbox.frames)
    assert inbox.frames == [("p", {"hello": "after"})]
    await good.aclose()


async def test_member_advertising_an_unusable_address_is_refused_not_dialled(
    nursery: trio.Nursery,
) -> None:
    node, inbox = await start(nursery, "n")
    bad = await connect_as(node, "mallory@no-port-here")
    assert await closed_by_other_end(bad)
    await bad.aclose()
    assert "mallory" not in node.learned
    good = await connect_as(node, "p@127.0.0.1:2")
    await good.send_all(encode_frame("still serving"))
    await wait_for(lambda: inbox.frames)
    assert inbox.frames == [("p", "still serving")]
    await good.aclose()
