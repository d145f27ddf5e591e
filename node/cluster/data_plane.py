"""Chunk bytes between peers: persistent authenticated TCP connections, no HTTP.

Every chunk transfer (fetches for pulls, repair and scrub, placement during
a push) travels here; control traffic stays on the signed peer HTTP API. A
connection opens with the Raft transport's HMAC challenge handshake under the
data plane's own greeting, and each direction seals its headers with a key of
its own (`node/cluster/data_frames.py` has the format). The chunk bytes after
a header are not sealed: their integrity is their BLAKE3 content address,
which the receiver always checks against the id in the authenticated header
before anything is kept or passed on. That is why the serving side can hand
the kernel the chunk file with `os.sendfile` and no Python touches the bytes,
and why it does not verify them itself: a peer that gets wrong bytes counts
them (`bad_chunks`, `peer_bad_chunks`), and the scrub finds rot at rest.

`DataPlaneServer` answers the requests of each connection in order: a GET
with the file from the store or else the cache, a PUT (its bytes read into a
buffer) by `ChunkStore.put` in a worker thread, which checks the bytes,
writes them durably (fsync, rename, fsync the folder) and only then lets the
answer say "stored"; the next requests are read while a PUT is stored.
`DataPlaneClient` keeps a few connections per peer and several requests in
flight on each; one task per connection reads the answers, in order, into a
fresh `bytearray` of the announced size with `recv_into` (measured here for
8 MiB: 0.23 ms to allocate and fill one, 0.43 ms to fill a reused buffer and
copy it out, which returning the bytes would need).

With TLS (`ssl_context` on both classes; mutual, against the cluster CA of
`node/cluster/cluster_tls.py`), every connection is wrapped in it before the
handshake, and `_TLSWire` takes `_Wire`'s place: the kernel cannot encrypt, so
a chunk is read from its file into the connection's one reused buffer in a
disk thread, a megabyte at a time, and sent through the TLS stream, where
plain TCP hands the file to `sendfile`. `scripts/bench cluster --tls`
measures what that costs.

Everything is bounded: the count a header announces (the largest chunk), the
requests in flight per connection, the connections accepted, the PUT bytes
buffered at once, the handshake, the wait for progress in a transfer, and the
idle time of a connection. A garbage, forged or replayed frame closes that
connection and is counted; the node serves on.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from blake3 import blake3

from consensus.engine import (
    TAG_BYTES,
    FrameForged,
    FrameInvalid,
    FrameSeal,
    HandshakeFailed,
    answer_handshake,
    describe_failure,
    dial_handshake,
)
from node.cluster.data_frames import (
    ANSWER_KEY_CONTEXT,
    FAILED,
    GET,
    GREETING,
    HEADER_BYTES,
    MISSING,
    NO_SPACE,
    OK,
    PUT,
    REFUSED,
    REQUEST_KEY_CONTEXT,
    STATUS_NAMES,
    Header,
    frame_length,
    open_header,
    seal_header,
)
from node.cluster.errors import PeerError, PeerSentWrongBytes, PeerUnreachable
from node.config import MiB
from node.storage.chunks import ChunkStore
from node.storage.disk_threads import DiskThreads
from node.storage.errors import ChunkCorrupt, ChunkMissing, InsufficientSpace

log = logging.getLogger(__name__)

FRAME_PREFIX = 4 + TAG_BYTES  # a frame's length and its tag
HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# A transfer, or an answer awaited, that moves no byte for this long ends its connection.
STALL_SECONDS = 30.0
# Connections with nothing in flight are closed after this long; the client's
# wait is shorter than the server's, so a server rarely closes one a request is on.
CLIENT_IDLE_SECONDS = 60.0
SERVER_IDLE_SECONDS = 120.0
MAX_CONNECTIONS = 256  # accepted at once; more are closed on arrival
MAX_IN_FLIGHT = 16  # requests a server reads ahead of its answers, per connection
CONNECTIONS_PER_PEER = 4
IN_FLIGHT_PER_CONNECTION = 8  # requests a client sends before their answers come
PUT_BUFFER_BYTES = 256 * MiB  # PUT bodies a server holds at once (one is always let in)
READ_AHEAD = 64 * 1024  # what one read for a header may take beyond it
WAKE_BYTES = 256 * 1024  # bytes of a chunk waiting before its reader is woken
TLS_FILE_PIECE = 1 * MiB  # what one disk read takes of a chunk going out through TLS
TLS_RECEIVE_BYTES = 64 * 1024  # what one read from a TLS stream asks for at most


class _Idle(Exception):
    """The connection had nothing to do for its idle time."""


class _Lost(Exception):
    """The connection a request was on ended before its answer came."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry  # it ended through no fault of this request: another may succeed


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (the host may be a bracketed IPv6 address) as host and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class ByteBudget:
    """Bytes held at once across tasks; a request for more waits for releases,
    except when nothing is held, so any one request within the bound gets in."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._released = trio.Event()

    async def acquire(self, size: int) -> None:
        while self.used and self.used + size > self.limit:
            await self._released.wait()
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size
        self._released.set()
        self._released = trio.Event()


class _Wire:
    """One connection's socket: exact reads for headers, `recv_into` for chunk bytes,
    plain sends and `sendfile`; every wait ends after `STALL_SECONDS` without progress.
    Callers keep to one writer at a time (the client's send lock, the server's one
    answering task)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream: trio.abc.Stream = stream
        self.sock = stream.socket
        self._ahead = bytearray()  # bytes read past what was asked for
        self._low_water = 1  # the socket's SO_RCVLOWAT

    async def _receive(self, n: int) -> bytes | bytearray:
        return await self.sock.recv(n)

    async def read_exactly(self, n: int, *, wait: float = STALL_SECONDS) -> bytes:
        """`n` bytes; TooSlowError after `wait` seconds without a byte (bytes read so
        far are kept, so the read may be tried again), EOFError at the end."""
        while len(self._ahead) < n:
            with trio.fail_after(wait):
                data = await self._receive(max(READ_AHEAD, n - len(self._ahead)))
            if not data:
                raise EOFError("connection closed")
            self._ahead += data
        out = bytes(self._ahead[:n])
        del self._ahead[:n]
        return out

    async def read_into(self, buffer: bytearray) -> None:
        """Fill `buffer` from the connection."""
        view = memoryview(buffer)
        got = min(len(self._ahead), len(view))
        view[:got] = self._ahead[:got]
        del self._ahead[:got]
        try:
            with trio.CancelScope(deadline=trio.current_time() + STALL_SECONDS) as scope:
                while got < len(view):
                    self._wake_at(min(len(view) - got, WAKE_BYTES))
                    received = await self.sock.recv_into(view[got:])
                    if not received:
                        raise EOFError("connection closed in the middle of a chunk")
                    got += received
                    scope.deadline = trio.current_time() + STALL_SECONDS
        finally:
            self._wake_at(1)  # headers are small: any byte wakes their reader
        if scope.cancelled_caught:
            raise trio.TooSlowError("a chunk stopped arriving")

    def _wake_at(self, count: int) -> None:
        """Wake the reader only once `count` bytes are waiting (SO_RCVLOWAT).

        A link slower than the reader delivers a chunk in pieces of a few KiB;
        a wake per piece cost more CPU than the bytes themselves. Never more
        than the bytes still to come, or the last piece would never wake it.
        """
        if count != self._low_water:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, count)
            except OSError:
                return  # closed meanwhile; the read that follows says so
            self._low_water = count

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        with trio.CancelScope(deadline=trio.current_time() + STALL_SECONDS) as scope:
            while view:
                sent = await self.sock.send(view)
                view = view[sent:]
                scope.deadline = trio.current_time() + STALL_SECONDS
        if scope.cancelled_caught:
            raise trio.TooSlowError("the peer stopped taking bytes")

    async def send_file(self, fd: int, size: int) -> None:
        """The first `size` bytes of the open file `fd`, by `os.sendfile`: the kernel
        copies them from the page cache into the socket."""
        offset = 0
        with trio.CancelScope(deadline=trio.current_time() + STALL_SECONDS) as scope:
            while offset < size:
                try:
                    sent = os.sendfile(self.sock.fileno(), fd, offset, size - offset)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
                    continue
                if not sent:
                    raise EOFError("the file ended before its size")
                offset += sent
                scope.deadline = trio.current_time() + STALL_SECONDS
        if scope.cancelled_caught:
            raise trio.TooSlowError("the peer stopped taking bytes")

    async def read_header(self, seal: FrameSeal, *, request: bool,
                          prefix: bytes | None = None) -> Header:
        """The next sealed header, both of its tags checked; `prefix` is its first
        `FRAME_PREFIX` bytes when the caller has read them already."""
        if prefix is None:
            prefix = await self.read_exactly(FRAME_PREFIX)
        frame_length(seal, prefix)
        return open_header(seal, await self.read_exactly(HEADER_BYTES + TAG_BYTES),
                           request=request)

    def close(self) -> None:
        """Close the socket now; a task waiting on it gets ClosedResourceError."""
        self.sock.close()


class _TLSWire(_Wire):
    """`_Wire` over a TLS stream: the same reads, sends and stall limits, with the file
    read into one reused buffer and encrypted on its way out instead of `sendfile`."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream],
                 disk: DiskThreads | None = None) -> None:
        self.stream = stream
        self.sock = stream.transport_stream.socket
        self._ahead = bytearray()
        self._disk = disk
        self._piece: bytearray | None = None  # made on the first file sent

    async def _receive(self, n: int) -> bytes | bytearray:
        return await self.stream.receive_some(n)

    async def read_into(self, buffer: bytearray) -> None:
        view = memoryview(buffer)
        got = min(len(self._ahead), len(view))
        view[:got] = self._ahead[:got]
        del self._ahead[:got]
        with trio.CancelScope(deadline=trio.current_time() + STALL_SECONDS) as scope:
            while got < len(view):
                # Capped: the TLS layer allocates the whole size asked for on every
                # read, and one read returns one record (16 KiB) or a few.
                data = await self._receive(min(len(view) - got, TLS_RECEIVE_BYTES))
                if not data:
                    raise EOFError("connection closed in the middle of a chunk")
                view[got:got + len(data)] = data
                got += len(data)
                scope.deadline = trio.current_time() + STALL_SECONDS
        if scope.cancelled_caught:
            raise trio.TooSlowError("a chunk stopped arriving")

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        # Cancelled half-way, a TLS stream is broken for good; so is the connection,
        # which is what a stall means on plain TCP too.
        with trio.CancelScope(deadline=trio.current_time() + STALL_SECONDS) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.TooSlowError("the peer stopped taking bytes")

    async def send_file(self, fd: int, size: int) -> None:
        if self._piece is None:
            self._piece = bytearray(min(TLS_FILE_PIECE, max(size, 1)))
        elif len(self._piece) < min(TLS_FILE_PIECE, size):
            self._piece = bytearray(min(TLS_FILE_PIECE, size))
        piece = memoryview(self._piece)
        offset = 0
        while offset < size:
            want = piece[:min(len(piece), size - offset)]
            if self._disk is not None:
                got = await self._disk.run(os.preadv, fd, [want], offset)
            else:
                got = await trio.to_thread.run_sync(os.preadv, fd, [want], offset)
            if not got:
                raise EOFError("the file ended before its size")
            # send_all has handed every byte to the TLS layer when it returns, so the
            # buffer is free for the next piece.
            await self.send(want[:got])
            offset += got

    def _wake_at(self, count: int) -> None:
        pass  # TLS records arrive whole or not at all: the low-water mark does not apply


async def _wrap_tls(stream: trio.SocketStream, context: ssl.SSLContext, *,
                    server_side: bool) -> trio.SSLStream[trio.SocketStream]:
    """`stream` inside TLS, handshake done (within `HANDSHAKE_TIMEOUT`)."""
    wrapped = trio.SSLStream(stream, context, server_side=server_side,
                             server_hostname=None)
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        await wrapped.do_handshake()
    return wrapped


def _open_for_sending(chunks: ChunkStore, cid: str) -> tuple[int, int]:
    fd, size = chunks.open_file(cid)
    try:
        # Start reading a cold chunk from disk now, so sendfile seldom waits for it.
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # only a hint
    return fd, size


# -- serving -------------------------------------------------------------------


@dataclass
class _Job:
    """One request read from a connection, answered in turn."""

    header: Header
    status: int = OK
    stored: trio.Event | None = None  # a PUT: set once its outcome is known


@dataclass
class _Conversation:
    """One accepted connection after its handshake."""

    wire: _Wire
    requests: FrameSeal
    answers: FrameSeal
    outstanding: int = 0  # requests read and not answered yet


class DataPlaneServer:
    """Serves this node's chunks to its peers and stores the chunks they place here."""

    def __init__(
        self, chunks: ChunkStore, disk: DiskThreads, secret: bytes, listen: str, *,
        counters: Counter[str], advertise_host: str | None = None,
        max_connections: int = MAX_CONNECTIONS, put_buffer_bytes: int = PUT_BUFFER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.chunks = chunks
        self.ssl_context = ssl_context  # TLS on every connection, a peer's cert required
        self.disk = disk
        self.secret = secret
        self.listen = listen
        self.counters = counters
        self.advertise_host = advertise_host or split_address(listen)[0]
        self.max_connections = max_connections
        self.port: int | None = None
        self.connections = 0
        self.rejected = 0  # connections refused or dropped: failed handshake, bad frame
        self.forged = 0  # of those, dropped for a frame that failed its tag
        self._put_budget = ByteBudget(put_buffer_bytes)

    @property
    def address(self) -> str:
        """Where peers reach this data plane, once `run` has started."""
        return f"{self.advertise_host}:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = split_address(self.listen)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host or None)
        except OSError as exc:
            raise OSError(exc.errno, f"data plane cannot listen on {self.listen}: "
                                     f"{exc.strerror or exc}") from None
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started()

    def _count(self, name: str) -> None:
        self.counters[f"data_plane_{name}"] += 1

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        """One connection a peer dialled. Whatever goes wrong in it ends it alone: it is
        counted, logged and closed, and never reaches the listener's nursery."""
        if self.connections >= self.max_connections:
            self._count("connections_refused")
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        peer = "?"
        try:
            try:
                wire: _Wire
                if self.ssl_context is None:
                    wire = _Wire(stream)
                else:
                    wire = _TLSWire(
                        await _wrap_tls(stream, self.ssl_context, server_side=True), self.disk
                    )
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    peer, agreed = await answer_handshake(
                        wire.stream, wire, self.secret, GREETING
                    )
            except (HandshakeFailed, trio.TooSlowError, EOFError, trio.BrokenResourceError,
                    OSError) as exc:
                self.rejected += 1
                self._count("rejected")
                log.warning("refused data plane connection from %s: %s", _remote(stream),
                            describe_failure(exc))
                return
            conversation = _Conversation(
                wire, agreed.seal(REQUEST_KEY_CONTEXT), agreed.seal(ANSWER_KEY_CONTEXT)
            )
            await self._converse(conversation)
        except (_Idle, EOFError, trio.BrokenResourceError, trio.ClosedResourceError,
                ConnectionError):
            pass  # the peer went away, or had nothing more to ask
        except FrameForged as exc:
            self.rejected += 1
            self.forged += 1
            self._count("forged")
            log.warning("disconnecting data plane peer %s: %s (tampered with or injected on "
                        "the way)", peer, exc)
        except Exception as exc:  # garbage, a stall, or a bug: this connection only
            self.rejected += 1
            self._count("rejected")
            log.warning("disconnecting data plane peer %s: %r", peer, exc)
        finally:
            self.connections -= 1
            await trio.aclose_forcefully(stream)

    async def _converse(self, conversation: _Conversation) -> None:
        """Read requests and answer them in order, until one side fails or goes idle."""
        jobs_in, jobs_out = trio.open_memory_channel[_Job](MAX_IN_FLIGHT)
        failures: list[Exception] = []

        async def guarded(work: Callable[..., object], *args: object) -> None:
            try:
                await work(*args)  # type: ignore[misc]
            except Exception as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, self._answer, conversation, jobs_out)
            nursery.start_soon(guarded, self._read_requests, conversation, jobs_in,
                               nursery, guarded)
        if failures:
            raise failures[0]

    async def _read_requests(
        self, conversation: _Conversation, jobs: trio.MemorySendChannel[_Job],
        nursery: trio.Nursery, guarded: Callable[..., object],
    ) -> None:
        wire = conversation.wire
        while True:
            try:
                prefix = await wire.read_exactly(FRAME_PREFIX, wait=SERVER_IDLE_SECONDS)
            except trio.TooSlowError:
                if conversation.outstanding:
                    continue  # answers are still going out: not idle
                raise _Idle() from None
            header = await wire.read_header(conversation.requests, request=True, prefix=prefix)
            job = _Job(header)
            if header.code == PUT:
                job.stored = trio.Event()
                await self._put_budget.acquire(header.count)
                try:
                    buffer = bytearray(header.count)
                    await wire.read_into(buffer)
                except BaseException:
                    self._put_budget.release(header.count)
                    raise
                nursery.start_soon(guarded, self._store, job, buffer)
            conversation.outstanding += 1
            await jobs.send(job)

    async def _store(self, job: _Job, buffer: bytearray) -> None:
        """Check the bytes against the id and store them durably; the job's status says how
        it went. `ChunkStore.put` does both in a worker thread, and keeps nothing that fails."""
        assert job.stored is not None
        cid = job.header.cid
        try:
            await self.disk.run(self.chunks.put, cid, buffer)
            self.counters["chunks_stored_from_peers"] += 1
        except ChunkCorrupt:
            job.status = REFUSED
            self.counters["chunk_put_mismatch"] += 1
            log.warning("refused chunk %s from a peer: its bytes do not match the id", cid)
        except InsufficientSpace:
            job.status = NO_SPACE
        except OSError as exc:
            job.status = FAILED
            log.error("could not store chunk %s from a peer: %r", cid, exc)
        finally:
            self._put_budget.release(job.header.count)
            job.stored.set()

    async def _answer(
        self, conversation: _Conversation, jobs: trio.MemoryReceiveChannel[_Job]
    ) -> None:
        """The one task that writes on this connection: answers in request order."""
        wire, seal = conversation.wire, conversation.answers
        async for job in jobs:
            header = job.header
            if header.code == GET:
                await self._send_chunk(wire, seal, header)
            else:
                assert job.stored is not None
                await job.stored.wait()
                await wire.send(seal_header(seal, job.status, header.chunk, 0))
            conversation.outstanding -= 1

    async def _send_chunk(self, wire: _Wire, seal: FrameSeal, header: Header) -> None:
        try:
            fd, size = await self.disk.run(_open_for_sending, self.chunks, header.cid)
        except ChunkMissing:
            await wire.send(seal_header(seal, MISSING, header.chunk, 0))
            return
        except OSError as exc:
            log.error("could not open chunk %s for a peer: %r", header.cid, exc)
            await wire.send(seal_header(seal, FAILED, header.chunk, 0))
            return
        try:
            await wire.send(seal_header(seal, OK, header.chunk, size))
            await wire.send_file(fd, size)
        finally:
            os.close(fd)
        self.counters["chunks_served_to_peers"] += 1


def _remote(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


# -- asking --------------------------------------------------------------------


@dataclass(frozen=True)
class _OpenFile:
    """A file to send as it is, by `sendfile`: its descriptor and size."""

    fd: int
    size: int


Body = bytes | bytearray | _OpenFile


@dataclass
class _Request:
    """One request on a client connection, waiting for its answer."""

    kind: int
    chunk: bytes
    done: trio.Event = field(default_factory=trio.Event)
    status: int = OK
    data: bytearray | None = None
    error: _Lost | None = None


class _Connection:
    """One connection to a peer's data plane, with requests in flight on it."""

    def __init__(self, pool: _Pool, wire: _Wire, requests: FrameSeal, answers: FrameSeal):
        self.pool = pool
        self.wire = wire
        self.requests = requests
        self.answers = answers
        self.send_lock = trio.Lock()
        self.pending: deque[_Request] = deque()  # sent, answers not read yet, oldest first
        self.in_flight = 0  # callers using it, pending or waiting to send
        self.arrived = trio.Event()  # a request was added to `pending`
        self.lost: _Lost | None = None

    def lose(self, reason: _Lost) -> None:
        """End the connection: no request goes on it any more, and every one waiting
        for an answer gets `reason`."""
        if self.lost is not None:
            return
        self.lost = reason
        self.pool.forget(self)
        self.wire.close()
        while self.pending:
            request = self.pending.popleft()
            request.error = reason
            request.done.set()
        self.arrived.set()

    async def call(self, kind: int, chunk: bytes, body: Body | None) -> _Request:
        """Send one request and wait for its answer."""
        request = _Request(kind, chunk)
        async with self.send_lock:
            if self.lost is not None:
                raise _Lost(str(self.lost), retry=True)
            self.pending.append(request)
            self.arrived.set()
            try:
                if kind == GET:
                    # A header is tiny: sending it whole beats breaking the
                    # connection (and the other requests on it) for a cancelled caller.
                    with trio.CancelScope(shield=True):
                        await self.wire.send(seal_header(self.requests, GET, chunk, 0))
                else:
                    assert body is not None
                    await self._send_put(chunk, body)
            except BaseException as exc:
                # Half a request leaves the stream unusable for everyone on it.
                reason = _Lost(f"sending failed: {exc!r}",
                               retry=not isinstance(exc, trio.TooSlowError))
                self.lose(reason)
                if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                                    trio.TooSlowError, EOFError)):
                    raise reason from None
                raise
        # A caller cancelled from here on leaves its request pending: the reading
        # task reads its answer all the same and drops it, and the stream stays whole.
        await request.done.wait()
        if request.error is not None:
            raise _Lost(str(request.error), retry=request.error.retry)
        return request

    async def _send_put(self, chunk: bytes, body: Body) -> None:
        if isinstance(body, _OpenFile):
            await self.wire.send(seal_header(self.requests, PUT, chunk, body.size))
            await self.wire.send_file(body.fd, body.size)
        else:
            await self.wire.send(seal_header(self.requests, PUT, chunk, len(body)))
            await self.wire.send(body)

    async def read_answers(self) -> None:
        """The connection's reading task: each answer to the oldest pending request,
        until the connection fails or has been idle for `CLIENT_IDLE_SECONDS`."""
        try:
            while True:
                if not self.pending:
                    self.arrived = trio.Event()
                    with trio.move_on_after(CLIENT_IDLE_SECONDS):
                        await self.arrived.wait()
                    if self.lost is not None:
                        return
                    if not self.pending and not self.in_flight:
                        self.lose(_Lost("idle", retry=True))
                        return
                    if not self.pending:
                        continue
                await self._read_answer()
        except FrameForged as exc:
            self.pool.client.forged += 1
            log.warning("disconnecting from data plane %s: %s (tampered with or injected on "
                        "the way)", self.pool.address, exc)
            self.lose(_Lost(f"forged answer: {exc}", retry=False))
        except (FrameInvalid, trio.TooSlowError) as exc:
            log.warning("disconnecting from data plane %s: %r", self.pool.address, exc)
            self.lose(_Lost(f"{exc!r}", retry=False))
        except (EOFError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.lose(_Lost(f"connection lost: {exc!r}", retry=True))
        finally:
            self.lose(_Lost("the data plane client stopped", retry=False))

    async def _read_answer(self) -> None:
        header = await self.wire.read_header(self.answers, request=False)
        if self.lost is not None or not self.pending:
            return
        request = self.pending[0]
        if header.chunk != request.chunk:
            raise FrameInvalid("an answer for another chunk than the one asked for")
        if header.code == OK and request.kind == GET:
            data = bytearray(header.count)
            await self.wire.read_into(data)
            request.data = data
        elif header.count:
            raise FrameInvalid("an answer that carries bytes it should not")
        request.status = header.code
        self.pending.popleft()
        request.done.set()


class _Pool:
    """The connections to one peer's data plane."""

    def __init__(self, client: DataPlaneClient, address: str) -> None:
        self.client = client
        self.address = address
        self.connections: list[_Connection] = []
        self.dialling = 0
        self._changed = trio.Event()  # a dial ended
        self.slots = trio.Semaphore(client.connections_per_peer * client.in_flight)

    def forget(self, connection: _Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)

    async def connection(self) -> _Connection:
        """The least busy connection with room, or a new one while all are busy and
        there are fewer than `connections_per_peer` (a new one is served in parallel)."""
        client = self.client
        while True:
            live = [c for c in self.connections if c.in_flight < client.in_flight]
            best = min(live, key=lambda c: c.in_flight, default=None)
            room = len(self.connections) + self.dialling < client.connections_per_peer
            if room and (best is None or best.in_flight):
                self.dialling += 1
                try:
                    best = await self._dial()
                finally:
                    self.dialling -= 1
                    self._changed.set()
                    self._changed = trio.Event()
            if best is not None:
                best.in_flight += 1
                return best
            # Every connection is full and the others are being dialled (`slots`
            # keeps the requests in flight below what all of them can take).
            await self._changed.wait()

    async def _dial(self) -> _Connection:
        client = self.client
        if client.nursery is None:
            raise PeerUnreachable("the data plane client is not running")
        try:
            host, port = split_address(self.address)
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, ValueError, trio.TooSlowError) as exc:
            raise PeerUnreachable(f"data plane {self.address}: {exc!r}") from None
        try:
            wire: _Wire
            if client.ssl_context is None:
                wire = _Wire(stream)
            else:
                wire = _TLSWire(await _wrap_tls(stream, client.ssl_context, server_side=False))
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                agreed = await dial_handshake(wire.stream, wire, client.secret, client.node_id,
                                              GREETING)
        except (HandshakeFailed, EOFError, OSError, trio.BrokenResourceError,
                trio.TooSlowError) as exc:
            await trio.aclose_forcefully(stream)
            raise PeerUnreachable(f"data plane {self.address}: handshake: {exc!r}") from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        connection = _Connection(
            self, wire, agreed.seal(REQUEST_KEY_CONTEXT), agreed.seal(ANSWER_KEY_CONTEXT)
        )
        self.connections.append(connection)
        client.nursery.start_soon(_read_then_close, connection)
        return connection


async def _read_then_close(connection: _Connection) -> None:
    try:
        await connection.read_answers()
    finally:
        await trio.aclose_forcefully(connection.wire.stream)


class DataPlaneClient:
    """Asks peers' data planes for chunks and places chunks on them, by address.

    `run` must be running (a task of the node's root nursery, through `Peers.run`):
    each connection's reading task lives in its nursery. Failures are PeerError:
    PeerUnreachable when the connection failed, PeerSentWrongBytes when the bytes
    did not hash to the id, plain PeerError for a peer's refusal or miss.
    """

    def __init__(
        self, node_id: str, secret: bytes, *, connections_per_peer: int = CONNECTIONS_PER_PEER,
        in_flight: int = IN_FLIGHT_PER_CONNECTION, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.node_id = node_id
        self.secret = secret
        self.ssl_context = ssl_context  # TLS on every connection, the peer's cert checked
        self.connections_per_peer = connections_per_peer
        self.in_flight = in_flight
        self.nursery: trio.Nursery | None = None
        self.forged = 0  # connections dropped for an answer that failed its tag
        self.wrong_bytes = 0  # chunks that arrived not matching their id
        self._pools: dict[str, _Pool] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.nursery = None
                for pool in self._pools.values():
                    for connection in list(pool.connections):
                        connection.lose(_Lost("the data plane client stopped", retry=False))

    def forget(self, address: str) -> None:
        """Close the connections to an address no peer listens on any more."""
        pool = self._pools.pop(address, None)
        if pool is not None:
            for connection in list(pool.connections):
                connection.lose(_Lost("the peer moved", retry=False))

    async def get(self, address: str, cid: str) -> bytearray:
        """The chunk's bytes from the data plane at `address`, checked against `cid`."""
        chunk = _chunk_bytes(cid)
        request = await self._request(address, GET, chunk, None)
        if request.status != OK:
            raise PeerError(f"{address} answered {STATUS_NAMES[request.status]} for chunk {cid}")
        assert request.data is not None
        if blake3(request.data).digest() != chunk:
            self.wrong_bytes += 1
            raise PeerSentWrongBytes(f"{address} sent bytes that do not match chunk {cid}")
        return request.data

    async def put(self, address: str, cid: str, data: bytes | bytearray) -> None:
        """Store the chunk durably on the peer."""
        request = await self._request(address, PUT, _chunk_bytes(cid), data)
        if request.status != OK:
            raise PeerError(f"{address} refused chunk {cid}: {STATUS_NAMES[request.status]}")

    async def put_file(self, address: str, cid: str, path: Path) -> None:
        """Store the chunk in the file at `path` durably on the peer, sending the file
        as it is (the peer checks it against `cid`); OSError when it cannot be read."""
        chunk = _chunk_bytes(cid)
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
        try:
            body = _OpenFile(fd, os.fstat(fd).st_size)
            request = await self._request(address, PUT, chunk, body)
        finally:
            os.close(fd)
        if request.status != OK:
            raise PeerError(f"{address} refused chunk {cid}: {STATUS_NAMES[request.status]}")

    async def _request(self, address: str, kind: int, chunk: bytes,
                       body: Body | None) -> _Request:
        for attempt in range(2):
            pool = self._pools.get(address)
            if pool is None:
                pool = self._pools[address] = _Pool(self, address)
            async with pool.slots:
                connection = await pool.connection()
                try:
                    return await connection.call(kind, chunk, body)
                except _Lost as exc:
                    # Idempotent either way: a GET, or a PUT of content-addressed bytes.
                    if attempt or not exc.retry:
                        raise PeerUnreachable(f"data plane {address}: {exc}") from None
                finally:
                    connection.in_flight -= 1
        raise AssertionError("unreachable")


def _chunk_bytes(cid: str) -> bytes:
    try:
        chunk = bytes.fromhex(cid)
    except ValueError:
        chunk = b""
    if len(chunk) != 32:
        raise PeerError(f"{cid!r} is not a chunk id")
    return chunk
