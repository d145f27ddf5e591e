"""The chunk data plane over real loopback TCP: verified bytes or a typed failure, and
a bad frame ends its own connection while the server keeps serving the others."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from consensus.engine import dial_handshake
from consensus.raft.transport import (
    RAFT_GREETING,
    FrameReader,
    FrameSeal,
    HandshakeFailed,
    client_handshake,
)
from node.cluster.data_frames import (
    GET,
    GREETING,
    MAX_CHUNK,
    PUT,
    REQUEST_KEY_CONTEXT,
    seal_header,
)
from node.cluster.data_plane import DataPlaneClient, DataPlaneServer
from node.cluster.errors import PeerError, PeerSentWrongBytes, PeerUnreachable
from node.config import Config, ConfigError, load_config
from node.storage.chunks import ChunkStore, chunk_id
from node.storage.disk_threads import DiskThreads
from node.storage.layout import DataDir

SECRET = b"s" * 32


@dataclass
class Plane:
    """A server over a chunk store, and a client of it, in this test's trio run."""

    chunks: ChunkStore
    server: DataPlaneServer
    client: DataPlaneClient
    counters: Counter[str]
    root: Path

    @property
    def address(self) -> str:
        return self.server.address

    def store(self, data: bytes) -> str:
        cid = chunk_id(data)
        self.chunks.put(cid, data)
        return cid


@pytest.fixture
async def plane(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Plane]:
    data = DataDir(tmp_path / "node")
    data.prepare()
    chunks = ChunkStore(data, cache_bytes=1 << 20)
    disk = DiskThreads(4)
    counters: Counter[str] = Counter()
    server = DataPlaneServer(chunks, disk, SECRET, "127.0.0.1:0", counters=counters)
    await nursery.start(server.run)
    client = DataPlaneClient("c1", SECRET, connections_per_peer=1, in_flight=8)
    await nursery.start(client.run)
    try:
        yield Plane(chunks, server, client, counters, data.root)
    finally:
        disk.close()


async def test_chunks_fetched_pipelined_on_one_connection_arrive_verified(plane: Plane) -> None:
    blobs = [os.urandom(100_000 + i * 7919) for i in range(12)]
    cids = [plane.store(b) for b in blobs]
    got: dict[str, bytes] = {}

    async def fetch(cid: str) -> None:
        got[cid] = bytes(await plane.client.get(plane.address, cid))

    async with trio.open_nursery() as nursery:
        for cid in cids:
            nursery.start_soon(fetch, cid)
    assert [got[cid] for cid in cids] == blobs
    assert plane.server.connections == 1, "one connection carried every request"
    assert plane.counters["chunks_served_to_peers"] == 12


async def test_a_chunk_the_server_lacks_answers_missing_and_the_connection_serves_on(
    plane: Plane,
) -> None:
    held = plane.store(os.urandom(5000))
    with pytest.raises(PeerError, match="missing") as caught:
        await plane.client.get(plane.address, chunk_id(b"never stored"))
    assert not isinstance(caught.value, PeerUnreachable)
    assert await plane.client.get(plane.address, held) == plane.chunks.read(held)
    assert plane.server.rejected == 0


async def test_a_chunk_served_from_the_cache_is_sent_too(plane: Plane) -> None:
    data = os.urandom(3000)
    cid = chunk_id(data)
    plane.chunks.cache_put(cid, data)
    assert not plane.chunks.has(cid)
    assert await plane.client.get(plane.address, cid) == data


async def test_a_chunk_damaged_on_disk_is_caught_and_counted_by_the_receiver(
    plane: Plane,
) -> None:
    cid = plane.store(os.urandom(70_000))
    path = plane.chunks.data.chunk_path(cid)
    damaged = bytearray(path.read_bytes())
    damaged[12_345] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(PeerSentWrongBytes):
        await plane.client.get(plane.address, cid)
    assert plane.client.wrong_bytes == 1
    # The framing held (only the bytes were wrong): the connection serves on.
    good = plane.store(os.urandom(1000))
    assert await plane.client.get(plane.address, good) == plane.chunks.read(good)
    assert plane.server.rejected == 0 and plane.server.connections == 1


async def test_a_client_with_the_wrong_secret_fails_the_handshake(
    plane: Plane, nursery: trio.Nursery
) -> None:
    cid = plane.store(b"x" * 1000)
    stranger = DataPlaneClient("stranger", b"x" * 32)
    await nursery.start(stranger.run)
    with pytest.raises(PeerUnreachable, match="handshake"):
        await stranger.get(plane.address, cid)
    assert plane.server.rejected == 1
    assert await plane.client.get(plane.address, cid) == b"x" * 1000


async def handshaken(plane: Plane) -> tuple[trio.SocketStream, FrameReader, FrameSeal]:
    """A raw connection that passed the handshake, and the seal of its requests."""
    assert plane.server.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", plane.server.port)
    reader = FrameReader(stream)
    agreed = await dial_handshake(stream, reader, SECRET, "raw", GREETING)
    return stream, reader, agreed.seal(REQUEST_KEY_CONTEXT)


async def assert_closed_by_server(stream: trio.SocketStream, reader: FrameReader) -> None:
    with trio.fail_after(10), pytest.raises((EOFError, trio.BrokenResourceError)):
        await reader.read_exactly(1)
    await stream.aclose()


async def test_a_tampered_header_closes_its_connection_and_the_server_serves_others(
    plane: Plane,
) -> None:
    cid = plane.store(os.urandom(2000))
    stream, reader, seal = await handshaken(plane)
    frame = bytearray(seal_header(seal, GET, bytes.fromhex(cid), 0))
    frame[30] ^= 0x40  # a bit of the chunk id, under the payload's tag
    await stream.send_all(bytes(frame))
    await assert_closed_by_server(stream, reader)
    assert plane.server.forged == 1
    assert plane.counters["data_plane_forged"] == 1
    assert await plane.client.get(plane.address, cid) == plane.chunks.read(cid)


async def test_a_header_sealed_with_another_key_closes_its_connection(plane: Plane) -> None:
    stream, reader, _ = await handshaken(plane)
    forged = FrameSeal(b"k" * 32)
    await stream.send_all(seal_header(forged, GET, b"\x00" * 32, 0))
    await assert_closed_by_server(stream, reader)
    assert plane.server.forged == 1


async def test_a_frame_sealed_with_the_raft_key_of_the_same_handshake_is_refused(
    plane: Plane,
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", plane.server.port)
    reader = FrameReader(stream)
    agreed = await dial_handshake(stream, reader, SECRET, "raw", GREETING)
    raft_key = agreed.seal("flotilla raft 2026-12 frame key, dialler to listener")
    await stream.send_all(seal_header(raft_key, GET, b"\x00" * 32, 0))
    await assert_closed_by_server(stream, reader)
    assert plane.server.forged == 1


async def test_a_raft_dialler_and_a_data_plane_listener_refuse_each_other(
    plane: Plane,
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", plane.server.port)
    with pytest.raises(HandshakeFailed, match="not a flotilla raft endpoint"):
        await client_handshake(stream, FrameReader(stream), SECRET, "n1@127.0.0.1:1")
    await stream.aclose()
    # The proofs differ too: a greeting spoofed to look like Raft's is no way in.
    stream = await trio.open_tcp_stream("127.0.0.1", plane.server.port)
    spoofed = type(RAFT_GREETING)(GREETING.magic, "raft", RAFT_GREETING.client_role,
                                  RAFT_GREETING.server_role)
    with pytest.raises((HandshakeFailed, EOFError)):
        await dial_handshake(stream, FrameReader(stream), SECRET, "n1", spoofed)
    await stream.aclose()
    assert plane.server.rejected == 2


async def test_garbage_instead_of_a_handshake_is_refused_and_the_server_serves_on(
    plane: Plane,
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", plane.server.port)
    reader = FrameReader(stream)
    await reader.read_exactly(4 + 32)  # the greeting and its nonce
    await stream.send_all(os.urandom(4096))
    await assert_closed_by_server(stream, reader)
    assert plane.server.rejected == 1
    cid = plane.store(b"still serving")
    assert await plane.client.get(plane.address, cid) == b"still serving"


async def test_a_replayed_request_closes_its_connection(plane: Plane) -> None:
    cid = plane.store(os.urandom(4000))
    stream, reader, seal = await handshaken(plane)
    frame = seal_header(seal, GET, bytes.fromhex(cid), 0)
    await stream.send_all(frame)
    answer = await reader.read_exactly(20 + 41 + 16 + 4000)  # header frame, then the bytes
    assert answer.endswith(plane.chunks.read(cid))
    await stream.send_all(frame)  # the same frame again: its sequence number is past
    await assert_closed_by_server(stream, reader)
    assert plane.server.forged == 1
    assert await plane.client.get(plane.address, cid) == plane.chunks.read(cid)


@pytest.mark.parametrize("kind", [PUT, GET])
async def test_an_oversized_count_closes_its_connection_before_any_byte_is_awaited(
    plane: Plane, kind: int
) -> None:
    stream, reader, seal = await handshaken(plane)
    await stream.send_all(seal_header(seal, kind, b"\x01" * 32, MAX_CHUNK + 1))
    await assert_closed_by_server(stream, reader)
    assert plane.server.rejected == 1 and plane.server.forged == 0
    cid = plane.store(b"after")
    assert await plane.client.get(plane.address, cid) == b"after"


async def test_a_frame_of_the_wrong_length_closes_its_connection(plane: Plane) -> None:
    stream, reader, seal = await handshaken(plane)
    await stream.send_all(b"".join(seal.seal(b"\x01" * 200)))
    await assert_closed_by_server(stream, reader)
    assert plane.server.rejected == 1


async def test_a_put_is_stored_durably_and_answered_only_then(plane: Plane) -> None:
    data = os.urandom(300_000)
    cid = chunk_id(data)
    await plane.client.put(plane.address, cid, data)
    assert plane.chunks.has(cid)
    assert plane.chunks.data.chunk_path(cid).read_bytes() == data
    assert plane.counters["chunks_stored_from_peers"] == 1


async def test_a_put_from_a_file_sends_the_file_as_it_is(plane: Plane, tmp_path: Path) -> None:
    data = os.urandom(200_001)
    cid = chunk_id(data)
    spooled = tmp_path / "spooled-chunk"
    spooled.write_bytes(data)
    await plane.client.put_file(plane.address, cid, spooled)
    assert plane.chunks.read(cid) == data


async def test_a_put_whose_bytes_do_not_match_its_id_is_refused_and_nothing_is_kept(
    plane: Plane,
) -> None:
    data = os.urandom(50_000)
    claimed = chunk_id(b"something else")
    with pytest.raises(PeerError, match="refused") as caught:
        await plane.client.put(plane.address, claimed, data)
    assert not isinstance(caught.value, PeerUnreachable)
    assert not plane.chunks.has(claimed)
    assert list(plane.chunks.data.tmp.iterdir()) == []
    assert plane.counters["chunk_put_mismatch"] == 1
    # A refusal is an answer: the connection carries the next request.
    await plane.client.put(plane.address, chunk_id(data), data)
    assert plane.chunks.has(chunk_id(data))


async def test_a_cancelled_fetch_leaves_the_others_on_its_connection_unharmed(
    plane: Plane,
) -> None:
    blobs = [os.urandom(400_000) for _ in range(6)]
    cids = [plane.store(b) for b in blobs]
    got: dict[str, bytes] = {}

    async def fetch(cid: str) -> None:
        got[cid] = bytes(await plane.client.get(plane.address, cid))

    async with trio.open_nursery() as nursery:
        for cid in cids[1:]:
            nursery.start_soon(fetch, cid)
        async with trio.open_nursery() as doomed:
            doomed.start_soon(fetch, cids[0])
            await trio.sleep(0)  # it may have sent its request, or be waiting to
            doomed.cancel_scope.cancel()
    assert cids[0] not in got
    assert all(got[cid] == blob for cid, blob in zip(cids[1:], blobs[1:], strict=True))
    assert plane.server.connections == 1 and plane.server.rejected == 0


async def test_a_server_that_is_not_there_is_unreachable(nursery: trio.Nursery) -> None:
    client = DataPlaneClient("c1", SECRET)
    await nursery.start(client.run)
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PeerUnreachable):
        await client.get(f"127.0.0.1:{port}", chunk_id(b"x"))


async def test_connections_past_the_cap_are_closed_on_arrival(
    plane: Plane, nursery: trio.Nursery
) -> None:
    disk = DiskThreads(1)
    capped = DataPlaneServer(plane.chunks, disk, SECRET, "127.0.0.1:0",
                             counters=plane.counters, max_connections=1)
    await nursery.start(capped.run)
    cid = plane.store(b"capped")
    first = DataPlaneClient("first", SECRET, connections_per_peer=1)
    second = DataPlaneClient("second", SECRET, connections_per_peer=1)
    await nursery.start(first.run)
    await nursery.start(second.run)
    assert await first.get(capped.address, cid) == b"capped"
    with pytest.raises(PeerUnreachable):
        await second.get(capped.address, cid)
    assert plane.counters["data_plane_connections_refused"] == 1
    assert await first.get(capped.address, cid) == b"capped"
    disk.close()


def test_the_data_plane_listens_on_the_http_port_plus_2000_unless_told() -> None:
    open_config = Config(listen="10.0.0.5:5001", auth="none")
    assert open_config.validated().data_plane_listen == "10.0.0.5:7001"
    assert Config(listen="127.0.0.1:0").validated().data_plane_listen == "127.0.0.1:0"
    told = load_config(env={"FLOTILLA_DATA_LISTEN": "0.0.0.0:9999"})
    assert told.data_plane_listen == "0.0.0.0:9999"
    with pytest.raises(ConfigError, match="data_listen"):
        load_config(env={}, flags={"data_listen": "no-port"})
    with pytest.raises(ConfigError, match="data_listen"):
        Config(listen="127.0.0.1:64000").validated()
