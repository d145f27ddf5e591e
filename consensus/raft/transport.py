"""Authenticated msgpack frames over TCP between the members of a group.

Each node dials every peer once and keeps that connection for the frames it
sends; frames from a peer arrive on the connection the peer dialled. Before
any frame is read, both ends prove they hold the cluster secret with an HMAC
challenge–response over fresh nonces, so a stranger can neither inject
messages nor learn anything by connecting. Frames are length-prefixed and
size-limited; a peer that sends garbage is logged and disconnected, and the
node keeps running. Nothing is ever unpickled: frames are plain msgpack.

The handshake alone would only prove who opened the connection: anyone on the
path could write frames into it afterwards. So each connection gets a frame
key of its own, BLAKE3 in its key-derivation mode (`derive_key`, with a
context string naming the protocol and the direction) over the secret, both
nonces and the dialler's identity; frames only travel from the dialler to the
listener, so one direction's key is all a connection needs. Every frame is
``length (4) | tag (16) | payload | tag (16)``: the first tag, keyed BLAKE3
over (sequence number, length), is checked before a single payload byte is
awaited, so a forged length cannot make the receiver wait for or buffer
bytes that never come; the second, over (sequence number, length, payload),
is checked before msgpack sees the payload. The sequence number is never
sent: both ends count the frames of the connection, so a frame injected,
replayed, dropped or reordered on the way fails its tag, and the receiver
drops the connection. Keyed BLAKE3 rather than HMAC-SHA256: on one core it
took 2.2 µs and 1.5 ms to tag 1 KiB and 8 MiB, HMAC-SHA256 2.8 µs and 5.0 ms;
`scripts/bench frames` measures both, and what sealing costs a frame.

The handshake and the frame seal serve another protocol too (the chunk data
plane in `node/cluster/data_plane.py`): a `Greeting` names the protocol, its
magic and the roles under its proofs, so a proof made for one protocol never
opens another, and `Handshake.seal(context)` derives a key per direction from
a context string of that protocol's own, so a Raft key never opens its frames.

With TLS contexts given (`server_ssl`, `client_ssl`), every connection is
first wrapped in TLS, which both ends require of each other (the node decides
what the certificates are, see `node/cluster/cluster_tls.py`); the handshake
and the frame tags run inside it unchanged, so TLS adds privacy and never
replaces the proof of the secret. A node without TLS and one with it cannot
talk: each sees the other fail its handshake.

Delivery is best effort, which is what Raft expects: a full send queue (in
frames or in bytes) or a broken connection drops frames, and the protocol
retries on its own. `PeerTransport` is what the driver needs of a transport;
`Transport` is the TCP one, and tests drive the driver over one in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Protocol

import msgpack
import trio
from blake3 import blake3

log = logging.getLogger(__name__)

# FLR1 sent frames without tags; a node of that version and this one refuse
# each other's greeting instead of misreading each other's frames.
MAGIC = b"FLR2"
NONCE_BYTES = 32
TAG_BYTES = 16  # 128-bit tags: forging one takes 2**128 tries, each costing a connection
FRAME_HEADER = 4 + TAG_BYTES  # the length and its tag
# Above the largest append: max_append_bytes (8 MiB) of entries, or one larger
# entry alone. The largest entry is a manifest PUT: a body of at most
# max_manifest_bytes (4 MiB by default, 16 MiB at most, node/config.py), the
# annotations and digests the command copies out of it (at most the body again)
# and under 1 KiB of names, ids and msgpack framing: 2 x 16 MiB + 1 KiB < 64 MiB.
MAX_FRAME = 64 << 20
# Per peer: enough for a few full appends (8 MiB each) or the largest entry.
QUEUE_BYTES = 64 << 20
HANDSHAKE_TIMEOUT = 5.0
# Diallers' addresses remembered; any secret holder can dial under any id.
MAX_LEARNED = 64
_LENGTH = struct.Struct(">I")
_SEQUENCE = struct.Struct(">Q")
# The BLAKE3 key-derivation context: fixed, and unique to this use.
_KEY_CONTEXT = "flotilla raft 2026-12 frame key, dialler to listener"

FrameHandler = Callable[[str, Any], Awaitable[None]]
SendFrame = Callable[[Any], Awaitable[None]]
ConnectionClosed = Callable[[str, int], None]

# The connection whose frame `on_frame` is handling; each connection is a task
# of its own, so the value set in it is seen by its handler calls only.
_connection: ContextVar[int | None] = ContextVar("raft_connection", default=None)


def current_connection() -> int | None:
    """The id of the connection that brought the frame being handled, None
    outside one: for a receiver that keeps state per connection and lets it go
    in `on_closed`."""
    return _connection.get()


class PeerTransport(Protocol):
    """Frames to and from the other members, by node id.

    The driver attaches itself before `run`: it sets `on_frame`, which gets
    every frame received (raising in it drops the connection that brought
    the frame), and `on_learned`, called when a peer not in `set_peers` has
    reached us and its address landed in `learned`. The snapshot receiver
    sets `on_closed`, called with the peer and the connection id
    (`current_connection()` while its frames were handled) once a connection
    a peer dialled has ended, so what arrived on it half-done can go.
    """

    on_frame: FrameHandler
    on_learned: Callable[[], None] | None
    on_closed: ConnectionClosed | None
    learned: dict[str, str]  # peers that reached us: id -> the address they listen on
    port: int | None  # where we listen, once `run` has started
    rejected: int  # connections refused or dropped for bad frames
    dropped: int  # frames dropped on full send queues

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ...

    def set_peers(self, peers: dict[str, str]) -> None:
        """The peers to send to from now on, id -> `host:port`."""
        ...

    def send(self, to: str, obj: Any) -> bool:
        """Queue a frame, best effort; False when it was dropped."""
        ...

    def stream_to(self, peer_id: str) -> AbstractAsyncContextManager[SendFrame]:
        """A connection of its own for a bulk transfer; `send` waits for the peer."""
        ...


class HandshakeFailed(Exception):
    """The other end did not prove it holds the cluster secret."""


class FrameInvalid(Exception):
    """Bytes on the wire that are not a well-formed frame."""


class FrameForged(FrameInvalid):
    """A frame whose tag is wrong: injected, replayed, reordered or damaged on the way."""


async def _no_receiver(sender: str, frame: Any) -> None:
    raise FrameInvalid("no receiver attached to this transport yet")


def _proof(secret: bytes, role: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(secret, role, hashlib.sha256)
    for part in parts:
        mac.update(_LENGTH.pack(len(part)))
        mac.update(part)
    return mac.digest()


def _frame_key(
    secret: bytes, server_nonce: bytes, client_nonce: bytes, ident: bytes,
    context: str = _KEY_CONTEXT,
) -> bytes:
    """The key of this connection's frames: no other connection, before or after, shares it."""
    kdf = blake3(derive_key_context=context)
    for part in (secret, server_nonce, client_nonce, ident):
        kdf.update(_LENGTH.pack(len(part)))
        kdf.update(part)
    return kdf.digest()


@dataclass(frozen=True)
class Greeting:
    """What tells one protocol's handshake from another's: the magic the listener
    opens with, the name its errors use, and the roles its proofs are made under
    (distinct per protocol, so a proof relayed from one never passes in another)."""

    magic: bytes
    name: str
    client_role: bytes
    server_role: bytes


RAFT_GREETING = Greeting(MAGIC, "raft", b"client", b"server")


@dataclass(frozen=True)
class Handshake:
    """What both ends of a connection agreed on once each proved the secret: the
    nonces and the dialler's identity, from which each direction's key is derived."""

    secret: bytes = field(repr=False)
    server_nonce: bytes
    client_nonce: bytes
    ident: bytes

    def seal(self, context: str) -> FrameSeal:
        """The seal of the frames of one direction, its key derived under `context`."""
        return FrameSeal(
            _frame_key(self.secret, self.server_nonce, self.client_nonce, self.ident, context)
        )


class ExactReader(Protocol):
    """What the handshake reads from: exactly `n` bytes, or EOFError."""

    async def read_exactly(self, n: int) -> bytes:
        ...


class FrameSeal:
    """Tags and checks the frames of one direction of one connection.

    Both ends hold one, made from the same key, and count frames the same
    way; the count is the sequence number under every tag. One keyed BLAKE3
    state per frame gives both tags: it starts over (sequence number, length),
    whose digest is the header's tag, and goes on over the payload, whose
    digest is the frame's. The start is 12 bytes of fixed width, so no
    header tag is ever the tag of a payload but the empty one of its own frame.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.sequence = 0
        self._opening: blake3 | None = None  # the MAC of the frame whose header was opened

    def _mac(self, length: int) -> blake3:
        return blake3(_SEQUENCE.pack(self.sequence) + _LENGTH.pack(length), key=self._key)

    def header(self, length: int) -> bytes:
        """The next frame's header for `length` bytes of payload (its length and tag)."""
        return _LENGTH.pack(length) + self._mac(length).digest(TAG_BYTES)

    def seal(self, payload: bytes) -> tuple[bytes, bytes, bytes]:
        """The next frame, as its header, `payload` and trailing tag (join to send)."""
        mac = self._mac(len(payload))
        header = _LENGTH.pack(len(payload)) + mac.digest(TAG_BYTES)
        mac.update(payload)
        self.sequence += 1
        return header, payload, mac.digest(TAG_BYTES)

    def open_header(self, header: bytes) -> int:
        """The length the next frame's header announces, once its tag is right."""
        (length,) = _LENGTH.unpack_from(header)
        mac = self._mac(length)
        if not hmac.compare_digest(header[_LENGTH.size:], mac.digest(TAG_BYTES)):
            raise FrameForged(f"frame {self.sequence} header failed its MAC")
        self._opening = mac
        return length

    def open(self, length: int, body: bytes) -> memoryview:
        """The payload of `body` (payload and tag) once its tag is right; the
        frame's header must have been opened first."""
        mac, self._opening = self._opening, None
        if mac is None:
            raise FrameForged(f"frame {self.sequence} opened before its header")
        view = memoryview(body)
        payload = view[:length]
        mac.update(payload)
        if not hmac.compare_digest(view[length:], mac.digest(TAG_BYTES)):
            raise FrameForged(f"frame {self.sequence} failed its MAC")
        self.sequence += 1
        return payload


class FrameReader:
    """Buffers a byte stream and yields whole frames (header, msgpack, tag)."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_frame: int = MAX_FRAME) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self.buffer = bytearray()

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(max(65536, n - len(self.buffer)))
            if not data:
                raise EOFError("connection closed")
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def read_frame(self, seal: FrameSeal) -> Any:
        """The next frame, decoded only after both of its tags were checked."""
        length = seal.open_header(await self.read_exactly(FRAME_HEADER))
        if length > self.max_frame:
            raise FrameInvalid(f"frame of {length} bytes exceeds {self.max_frame}")
        return decode_frame(seal.open(length, await self.read_exactly(length + TAG_BYTES)))


def decode_frame(payload: bytes | memoryview) -> Any:
    """A frame's payload as the plain msgpack it must be, or FrameInvalid."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    except Exception as exc:
        # Not only ValueError and UnpackException: a list or map used as a
        # map key raises TypeError, and what else a decoder may raise on
        # hostile bytes is not ours to enumerate.
        raise FrameInvalid(f"undecodable frame: {exc!r}") from None


def _refuse_ext(code: int, data: bytes) -> Any:
    # Our frames are plain msgpack; an extension type is never one of ours.
    raise FrameInvalid(f"msgpack extension type {code} in a frame")


def encode_frame(obj: Any) -> bytes:
    """A frame's payload, which `max_frame` limits; a `FrameSeal` makes it a frame."""
    return msgpack.packb(obj, use_bin_type=True)


async def client_handshake(
    stream: trio.abc.Stream, reader: ExactReader, secret: bytes, node_id: str
) -> FrameSeal:
    """Prove our knowledge of the secret to the server, and check its proof;
    returns the seal of the frames we send on this connection."""
    agreed = await dial_handshake(stream, reader, secret, node_id, RAFT_GREETING)
    return agreed.seal(_KEY_CONTEXT)


async def server_handshake(
    stream: trio.abc.Stream, reader: ExactReader, secret: bytes
) -> tuple[str, FrameSeal]:
    """Challenge a connecting peer; returns its identity (`id@host:port` of its
    own listener) once it has proved the secret, and the seal its frames must carry."""
    identity, agreed = await answer_handshake(stream, reader, secret, RAFT_GREETING)
    return identity, agreed.seal(_KEY_CONTEXT)


async def dial_handshake(
    stream: trio.abc.Stream, reader: ExactReader, secret: bytes, node_id: str,
    greeting: Greeting,
) -> Handshake:
    """The dialler's side of `greeting`'s handshake: check the listener's magic,
    prove the secret over both nonces, check the listener's proof."""
    server_nonce = await reader.read_exactly(len(greeting.magic) + NONCE_BYTES)
    if not server_nonce.startswith(greeting.magic):
        if server_nonce.startswith(greeting.magic[:3]):
            raise HandshakeFailed(
                f"{greeting.name} endpoint speaks {server_nonce[:len(greeting.magic)]!r}, "
                f"we speak {greeting.magic!r}"
            )
        raise HandshakeFailed(f"not a flotilla {greeting.name} endpoint")
    server_nonce = server_nonce[len(greeting.magic):]
    client_nonce = os.urandom(NONCE_BYTES)
    ident = node_id.encode()
    proof = _proof(secret, greeting.client_role, server_nonce, client_nonce, ident)
    await stream.send_all(_LENGTH.pack(len(ident)) + ident + client_nonce + proof)
    expected = _proof(secret, greeting.server_role, client_nonce, server_nonce, ident)
    if not hmac.compare_digest(await reader.read_exactly(len(expected)), expected):
        raise HandshakeFailed("server did not prove the cluster secret")
    return Handshake(secret, server_nonce, client_nonce, ident)


async def answer_handshake(
    stream: trio.abc.Stream, reader: ExactReader, secret: bytes, greeting: Greeting
) -> tuple[str, Handshake]:
    """The listener's side of `greeting`'s handshake: send a fresh nonce, check the
    dialler's proof, prove the secret back; returns the identity the dialler gave."""
    server_nonce = os.urandom(NONCE_BYTES)
    await stream.send_all(greeting.magic + server_nonce)
    (length,) = _LENGTH.unpack(await reader.read_exactly(_LENGTH.size))
    if length > 256:
        raise HandshakeFailed("node id too long")
    ident = await reader.read_exactly(length)
    client_nonce = await reader.read_exactly(NONCE_BYTES)
    proof = await reader.read_exactly(hashlib.sha256().digest_size)
    expected = _proof(secret, greeting.client_role, server_nonce, client_nonce, ident)
    if not hmac.compare_digest(proof, expected):
        raise HandshakeFailed("peer did not prove the cluster secret")
    await stream.send_all(
        _proof(secret, greeting.server_role, client_nonce, server_nonce, ident)
    )
    try:
        identity = ident.decode()
    except UnicodeDecodeError:
        raise HandshakeFailed("node id is not text") from None
    return identity, Handshake(secret, server_nonce, client_nonce, ident)


@dataclass
class _Peer:
    """One peer's send queue (frame payloads, bounded in frames and in bytes) and link."""

    address: str
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    queued: int = 0  # payload bytes in the queue

    def take_nowait(self) -> bytes:
        payload = self.receive.receive_nowait()
        self.queued -= len(payload)
        return payload

    async def take(self) -> bytes:
        payload = await self.receive.receive()
        self.queued -= len(payload)
        return payload

    def discard(self) -> None:
        """Stop its link and let go of everything still queued for it."""
        self.cancel.cancel()
        self.send.close()
        try:
            while True:
                self.take_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            pass


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Transport:
    """Sends frames to peers by id and hands every frame received to `on_frame`."""

    def __init__(
        self,
        node_id: str,
        secret: bytes,
        listen: str,
        on_frame: FrameHandler = _no_receiver,
        *,
        queue_frames: int = 8192,
        queue_bytes: int = QUEUE_BYTES,
        max_frame: int = MAX_FRAME,
        advertise_host: str | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.node_id = node_id
        self.server_ssl = server_ssl  # with client_ssl: TLS on every connection
        self.client_ssl = client_ssl
        self.advertise_host = advertise_host or split_address(listen)[0]
        self.secret = secret
        self.listen = listen
        self.on_frame = on_frame
        self.queue_frames = queue_frames
        self.queue_bytes = queue_bytes  # per peer; one frame alone is let in whatever its size
        self.max_frame = max_frame
        self.rejected = 0  # connections that failed the handshake or sent garbage
        self.forged = 0  # of those, connections dropped for a frame that failed its MAC
        self.dropped = 0  # frames dropped because a peer's queue was full
        self._peers: dict[str, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self.port: int | None = None
        # Peers that dialled us, by id → the address they listen on; a node that
        # was just added learns where to answer its leader from this.
        self.learned: dict[str, str] = {}
        self.on_learned: Callable[[], None] | None = None
        self.on_closed: ConnectionClosed | None = None
        self._connection_ids = count(1)

    @property
    def identity(self) -> str:
        return f"{self.node_id}@{self.advertise_host}:{self.port}"

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting in all send queues."""
        return sum(peer.queued for peer in self._peers.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = split_address(self.listen)
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer_id, peer in self._peers.items():
                nursery.start_soon(self._sender, peer_id, peer)
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started()

    def set_peers(self, peers: dict[str, str]) -> None:
        """Make the set of peers `peers` (id → host:port); others are disconnected."""
        for peer_id in list(self._peers):
            if peer_id not in peers or self._peers[peer_id].address != peers[peer_id]:
                self._peers.pop(peer_id).discard()
        for peer_id, address in peers.items():
            if peer_id == self.node_id or peer_id in self._peers:
                continue
            send, receive = trio.open_memory_channel[bytes](self.queue_frames)
            peer = _Peer(address, send, receive)
            self._peers[peer_id] = peer
            if self._nursery is not None:
                self._nursery.start_soon(self._sender, peer_id, peer)

    def send(self, to: str, obj: Any) -> bool:
        """Queue a frame for a peer; False when it was dropped (unknown peer, full queue).

        A queue with anything in it takes no frame that would carry it past
        `queue_bytes`; an empty one takes any frame, so one entry larger than
        the cap still reaches the peer.
        """
        peer = self._peers.get(to)
        if peer is None:
            return False
        payload = encode_frame(obj)
        if peer.queued and peer.queued + len(payload) > self.queue_bytes:
            self.dropped += 1
            return False
        try:
            peer.send.send_nowait(payload)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        peer.queued += len(payload)
        return True

    @asynccontextmanager
    async def stream_to(self, peer_id: str) -> AsyncIterator[SendFrame]:
        """A dedicated connection for a bulk transfer (a snapshot), with TCP's back-pressure.

        Yields `send(obj)`, which returns once the frame is written; frames on
        this connection never wait behind, or hold up, the peer's Raft traffic.
        """
        peer = self._peers.get(peer_id)
        if peer is None:
            raise OSError(f"unknown peer {peer_id}")
        stream = await self._connect(peer.address)
        async with stream:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                seal = await client_handshake(
                    stream, FrameReader(stream), self.secret, self.identity
                )

            async def send(obj: Any) -> None:
                await stream.send_all(b"".join(seal.seal(encode_frame(obj))))

            yield send

    async def _sender(self, peer_id: str, peer: _Peer) -> None:
        backoff = 0.05
        with peer.cancel:
            while True:
                try:
                    stream = await self._connect(peer.address)
                    async with stream:
                        reader = FrameReader(stream)
                        with trio.fail_after(HANDSHAKE_TIMEOUT):
                            seal = await client_handshake(
                                stream, reader, self.secret, self.identity
                            )
                        backoff = 0.05
                        await self._pump(stream, peer, seal)
                except (OSError, trio.BrokenResourceError, trio.TooSlowError, EOFError,
                        HandshakeFailed) as exc:
                    log.debug("link to %s (%s) down: %r", peer_id, peer.address, exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _connect(self, address: str) -> trio.abc.Stream:
        """A connection to `address`, inside TLS when this transport has it."""
        host, port = split_address(address)
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
        if self.client_ssl is None:
            return stream
        # No host name to check: any certificate of the cluster's CA is a member's,
        # and which member, the HMAC handshake inside says.
        wrapped = trio.SSLStream(stream, self.client_ssl, server_hostname=None)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await wrapped.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return wrapped

    async def _pump(self, stream: trio.abc.Stream, peer: _Peer, seal: FrameSeal) -> None:
        """Seal and write queued frames, coalescing whatever is waiting into one send."""
        while True:
            payload = await peer.take()
            batch = [*seal.seal(payload)]
            size = len(payload)
            while size < (1 << 20):
                try:
                    payload = peer.take_nowait()
                except trio.WouldBlock:
                    break
                batch.extend(seal.seal(payload))
                size += len(payload)
            await stream.send_all(b"".join(batch))

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        """One connection a peer dialled: the handshake, then its frames.

        Whatever goes wrong in here ends this connection only: it is logged
        and closed, and never escapes into the listener's nursery, which
        would take every other connection and the node down with it.
        """
        peer_id = "?"
        try:
            admitted = await self._admit(stream)
            if admitted is not None:
                peer_id, reader, seal = admitted
                await self._read_frames(reader, seal, peer_id)
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the peer went away
        except Exception as exc:
            self.rejected += 1
            log.warning("dropped raft connection from %s (%s): %r", peer_id, _remote(stream), exc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _admit(
        self, stream: trio.SocketStream
    ) -> tuple[str, FrameReader, FrameSeal] | None:
        """The peer's id once it proved the secret and named a usable address; None if refused."""
        channel: trio.abc.Stream = stream
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                if self.server_ssl is not None:
                    channel = trio.SSLStream(stream, self.server_ssl, server_side=True)
                    await channel.do_handshake()
                reader = FrameReader(channel, self.max_frame)
                identity, seal = await server_handshake(channel, reader, self.secret)
            peer_id, _, address = identity.partition("@")
            if address:
                _check_address(address)
        except (HandshakeFailed, trio.TooSlowError, EOFError, trio.BrokenResourceError,
                OSError) as exc:
            self.rejected += 1
            log.warning("refused raft connection from %s: %s", _remote(stream),
                        describe_failure(exc))
            return None
        if address and self.learned.get(peer_id) != address:
            self.learned.pop(peer_id, None)
            self.learned[peer_id] = address  # newest last
            while len(self.learned) > MAX_LEARNED:
                # Members' addresses are in the replicated state; what this keeps
                # is for the moments before a new member has applied them.
                del self.learned[next(iter(self.learned))]
            if peer_id not in self._peers and self.on_learned is not None:
                self.on_learned()
        return peer_id, reader, seal

    async def _read_frames(self, reader: FrameReader, seal: FrameSeal, peer_id: str) -> None:
        connection = next(self._connection_ids)
        _connection.set(connection)
        try:
            while True:
                frame = await reader.read_frame(seal)
                try:
                    await self.on_frame(peer_id, frame)
                except Exception as exc:  # a well-formed frame with nonsense inside
                    raise FrameInvalid(f"unusable frame: {exc!r}") from None
        except FrameForged as exc:
            self.rejected += 1
            self.forged += 1
            log.warning("disconnecting %s: %s (tampered with or injected on the way)",
                        peer_id, exc)
        except FrameInvalid as exc:
            self.rejected += 1
            log.warning("disconnecting %s: %s", peer_id, exc)
        finally:
            if self.on_closed is not None:
                self.on_closed(peer_id, connection)


def _check_address(address: str) -> None:
    """Refuse, as a failed handshake, an address this node could never dial back."""
    try:
        host, port = split_address(address)
    except ValueError:
        raise HandshakeFailed(f"unusable listen address {address!r}") from None
    if not host or not 0 < port < 65536:
        raise HandshakeFailed(f"unusable listen address {address!r}")


def describe_failure(exc: BaseException) -> str:
    """What went wrong with a connection, in words: a broken TLS stream says it
    through its cause."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return str(exc) or repr(exc)


def _remote(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"
