"""The Raft transport: only holders of the cluster secret get a frame in."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
import trio.testing

from consensus.raft.transport import (
    MAGIC,
    MAX_LEARNED,
    NONCE_BYTES,
    FrameReader,
    FrameSeal,
    HandshakeFailed,
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


async def greeted(node: Transport) -> tuple[trio.SocketStream, bytes]:
    """A raw connection to `node` and the greeting it opens with."""
    stream = await trio.open_tcp_stream("127.0.0.1", node.port)
    return stream, await stream.receive_some(len(MAGIC) + NONCE_BYTES)


async def test_raw_garbage_before_handshake_is_refused_and_node_keeps_serving(
    nursery: trio.Nursery,
) -> None:
    node, inbox = await start(nursery, "n")
    stream, greeting = await greeted(node)
    assert greeting.startswith(MAGIC)
    # A frame sent without a handshake is read as a (bogus) handshake and refused.
    payload = encode_frame({"type": "append"})
    await stream.send_all(struct.pack(">I", len(payload)) + payload + b"\x00" * 100)
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
        peer._peers["n"].send.send_nowait(b"\xc1\xc1\xc1")
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


class Member:
    """A client connection that did the real handshake, as a member would, and
    seals what it sends with the key that came out of it."""

    def __init__(self, stream: trio.SocketStream, seal: FrameSeal) -> None:
        self.stream = stream
        self.seal = seal

    async def send_frames(self, *frames: Any) -> None:
        """Send `frames` as well-formed, sealed frames."""
        await self.send_payloads(*(encode_frame(frame) for frame in frames))

    async def send_payloads(self, *payloads: bytes) -> None:
        """Send `payloads`, whatever they hold, as sealed frames."""
        await self.stream.send_all(b"".join(b"".join(self.seal.seal(p)) for p in payloads))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def connect_as(node: Transport, identity: str, secret: bytes = SECRET) -> Member:
    assert node.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", node.port)
    return Member(stream, await client_handshake(stream, FrameReader(stream), secret, identity))


async def closed_by_other_end(member: Member) -> bool:
    stream = member.stream
    with trio.fail_after(5):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return True


# Payloads a member holding the secret might seal (its tags are right): what
# is inside must still be refused without harm.
GARBAGE_AFTER_HANDSHAKE = {
    # 81 91 01 01: a map whose key is a list; msgpack raises TypeError (unhashable).
    "list_as_map_key": bytes.fromhex("81910101"),
    "map_as_map_key": bytes.fromhex("818001"),
    "deep_nesting": b"\x91" * 100_000 + b"\x01",
    "ext_type": bytes.fromhex("d40501"),
    "bad_timestamp_ext": bytes.fromhex("d5ff0000"),
    "trailing_bytes": b"\x01\x02",
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE_AFTER_HANDSHAKE))
async def test_malformed_frame_after_handshake_closes_only_that_connection(
    nursery: trio.Nursery, garbage: str
) -> None:
    node, inbox = await start(nursery, "n")
    bad = await connect_as(node, "mallory@127.0.0.1:1")
    await bad.send_payloads(GARBAGE_AFTER_HANDSHAKE[garbage])
    assert await closed_by_other_end(bad)
    await bad.aclose()
    assert node.rejected == 1
    # The listener survived: a well-behaved member still gets its frame through.
    good = await connect_as(node, "p@127.0.0.1:2")
    await good.send_frames({"hello": "after"})
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
    await good.send_frames("still serving")
    await wait_for(lambda: inbox.frames)
    assert inbox.frames == [("p", "still serving")]
    await good.aclose()


async def test_diallers_under_ever_new_ids_leave_a_bounded_set_of_addresses_to_dial(
    nursery: trio.Nursery,
) -> None:
    # Every learned address is a peer the driver may dial again and again.
    node, _ = await start(nursery, "n")
    for n in range(MAX_LEARNED + 20):
        member = await connect_as(node, f"x{n}@127.0.0.1:{1000 + n}")
        await member.aclose()
    assert len(node.learned) == MAX_LEARNED
    assert f"x{MAX_LEARNED + 19}" in node.learned  # the newest are kept
    assert "x0" not in node.learned


async def test_a_sealed_header_announcing_a_huge_frame_is_refused_before_any_payload(
    nursery: trio.Nursery,
) -> None:
    node, _ = await start(nursery, "n")
    bad = await connect_as(node, "mallory@127.0.0.1:1")
    await bad.stream.send_all(bad.seal.header(0xFFFFFFFF))
    assert await closed_by_other_end(bad)
    await bad.aclose()
    assert node.rejected == 1 and node.forged == 0  # refused for its size, not its tag


async def test_nodes_of_the_previous_wire_format_and_this_one_refuse_each_other(
    nursery: trio.Nursery,
) -> None:
    node, _ = await start(nursery, "n")
    stream, greeting = await greeted(node)
    # An FLR1 node checks the greeting for its own magic and hangs up.
    assert not greeting.startswith(b"FLR1")
    await stream.aclose()
    # And this one hangs up on an FLR1 node's greeting, naming both formats.
    old, new = trio.testing.memory_stream_pair()
    await old.send_all(b"FLR1" + b"\x00" * NONCE_BYTES)
    with pytest.raises(HandshakeFailed, match="FLR1"):
        await client_handshake(new, FrameReader(new), SECRET, "n@127.0.0.1:1")
