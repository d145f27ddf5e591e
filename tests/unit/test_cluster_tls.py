"""The cluster CA every node derives from the secret, and TLS between its leaves.

Two nodes holding the same secret must build the same trust anchor without
ever exchanging it, and a node holding another secret must not get in; the
handshakes, and the data plane inside TLS, run over real loopback sockets.
"""

from __future__ import annotations

import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from node.cluster.cluster_tls import CLUSTER_SERVER_NAME, cluster_ca, cluster_tls, issue_leaf
from node.cluster.data_plane import TLS_FILE_PIECE, DataPlaneClient, DataPlaneServer
from node.cluster.errors import PeerUnreachable
from node.storage.chunks import ChunkStore, chunk_id
from node.storage.disk_threads import DiskThreads
from node.storage.layout import DataDir

SECRET_A = b"a" * 32
SECRET_B = b"b" * 32


def _der(secret: bytes) -> bytes:
    return cluster_ca(secret).certificate.public_bytes(serialization.Encoding.DER)


def test_the_ca_derived_from_one_secret_is_the_same_byte_for_byte() -> None:
    first = _der(SECRET_A)
    cluster_ca.cache_clear()  # derive it again, as another node would
    assert _der(SECRET_A) == first


def test_another_secret_derives_another_ca() -> None:
    a, b = cluster_ca(SECRET_A), cluster_ca(SECRET_B)
    assert a.certificate.public_key() != b.certificate.public_key()
    assert _der(SECRET_A) != _der(SECRET_B)


def test_a_leaf_verifies_under_its_own_secrets_ca_only() -> None:
    leaf = issue_leaf(cluster_ca(SECRET_A), "n1")
    leaf.certificate.verify_directly_issued_by(cluster_ca(SECRET_A).certificate)
    with pytest.raises(InvalidSignature):
        leaf.certificate.verify_directly_issued_by(cluster_ca(SECRET_B).certificate)


def test_every_start_makes_a_fresh_leaf_key() -> None:
    first, second = cluster_tls(SECRET_A, "n1"), cluster_tls(SECRET_A, "n1")
    assert first.leaf.certificate.public_key() != second.leaf.certificate.public_key()


async def _handshake(server_secret: bytes, client_secret: bytes) -> str | BaseException:
    """A mutual TLS handshake between a listener and a dialler of these secrets,
    over a real loopback connection: the server's common name as the client saw it,
    or why the client's handshake failed."""
    server = cluster_tls(server_secret, "server").mutual_server_context()
    client = cluster_tls(client_secret, "client").mutual_client_context()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    served: list[str] = []

    async def serve_one(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server, server_side=True)
        try:
            await tls.do_handshake()
            served.append(dict(x[0] for x in tls.getpeercert()["subject"])["commonName"])
            await tls.send_all(b"ok")
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve_one, listeners)
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            tls = trio.SSLStream(stream, client, server_hostname=None)
            try:
                with trio.fail_after(10):
                    await tls.do_handshake()
                    assert await tls.receive_some(2) == b"ok"
            except trio.BrokenResourceError as exc:
                await trio.aclose_forcefully(tls)
                return exc.__cause__ or exc
            name = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
            await trio.aclose_forcefully(tls)
            assert served == ["client"]  # the server saw the client's certificate
            return name
        finally:
            nursery.cancel_scope.cancel()


async def test_nodes_of_one_secret_complete_a_mutual_handshake() -> None:
    assert await _handshake(SECRET_A, SECRET_A) == "server"


async def test_a_node_of_another_secret_is_refused_by_the_listener() -> None:
    assert isinstance(await _handshake(SECRET_A, SECRET_B), ssl.SSLError)
    assert isinstance(await _handshake(SECRET_B, SECRET_A), ssl.SSLError)


async def test_a_dialler_without_a_certificate_is_refused() -> None:
    server = cluster_tls(SECRET_A, "server").mutual_server_context()
    # Trusts the CA, but has no leaf of its own to show.
    bare = ssl.create_default_context(cadata=cluster_ca(SECRET_A).pem)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve_one(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server, server_side=True)
        try:
            await tls.do_handshake()
            await tls.send_all(b"should not get here")
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve_one, listeners)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(stream, bare, server_hostname=CLUSTER_SERVER_NAME)
        refused = False
        try:
            with trio.fail_after(10):
                await tls.do_handshake()
                # TLS 1.3: the refusal comes after the client's side of the handshake.
                await tls.receive_some(100)
        except trio.BrokenResourceError:
            refused = True
        await trio.aclose_forcefully(tls)
        nursery.cancel_scope.cancel()
    assert refused


# -- the data plane inside TLS --------------------------------------------------


@pytest.fixture
async def tls_plane(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[tuple[
        ChunkStore, DataPlaneServer]]:
    data = DataDir(tmp_path / "node")
    data.prepare()
    chunks = ChunkStore(data, cache_bytes=1 << 20)
    disk = DiskThreads(2)
    server = DataPlaneServer(
        chunks, disk, SECRET_A, "127.0.0.1:0", counters=Counter(),
        ssl_context=cluster_tls(SECRET_A, "server").mutual_server_context(),
    )
    await nursery.start(server.run)
    try:
        yield chunks, server
    finally:
        disk.close()


async def test_chunks_cross_a_tls_data_plane_both_ways(
    tls_plane: tuple[ChunkStore, DataPlaneServer], tmp_path: Path,
) -> None:
    chunks, server = tls_plane
    client = DataPlaneClient(
        "c1", SECRET_A, ssl_context=cluster_tls(SECRET_A, "c1").mutual_client_context()
    )
    # Larger than one disk read of a chunk sent through TLS, and not a multiple of it.
    served = os.urandom(TLS_FILE_PIECE * 2 + 12345)
    served_id = chunk_id(served)
    chunks.put(served_id, served)
    placed = os.urandom(300_000)
    from_file = tmp_path / "spooled"
    from_file.write_bytes(os.urandom(TLS_FILE_PIECE + 1))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        assert await client.get(server.address, served_id) == served
        await client.put(server.address, chunk_id(placed), placed)
        await client.put_file(server.address, chunk_id(from_file.read_bytes()), from_file)
        nursery.cancel_scope.cancel()
    assert chunks.read(chunk_id(placed)) == placed
    assert chunks.read(chunk_id(from_file.read_bytes())) == from_file.read_bytes()


async def test_a_plain_data_plane_client_cannot_reach_a_tls_one_and_it_serves_on(
    tls_plane: tuple[ChunkStore, DataPlaneServer],
) -> None:
    chunks, server = tls_plane
    data = os.urandom(1000)
    chunks.put(chunk_id(data), data)
    plain = DataPlaneClient("plain", SECRET_A)
    other = DataPlaneClient(
        "other", SECRET_B, ssl_context=cluster_tls(SECRET_B, "other").mutual_client_context()
    )
    member = DataPlaneClient(
        "member", SECRET_A, ssl_context=cluster_tls(SECRET_A, "m").mutual_client_context()
    )
    async with trio.open_nursery() as nursery:
        for client in (plain, other, member):
            await nursery.start(client.run)
        for stranger in (plain, other):
            with pytest.raises(PeerUnreachable):
                await stranger.get(server.address, chunk_id(data))
        assert await member.get(server.address, chunk_id(data)) == data
        nursery.cancel_scope.cancel()
    assert server.rejected == 2
