"""Request bodies: back-pressure, the pace they must keep, and what becomes of the part left unread.

Quart buffers a request body for the handler without bound: a client that
sends faster than the handler writes to disk would grow the node's memory
with the whole upload. `BoundedBody` lets the receiving task wait whenever
more than `HIGH_WATER` bytes are buffered, so a 1 GiB push stays within a few
MiB of memory; the client simply sees TCP slow down. Nor is any of a body
read before the handler asks for it: a request refused before its body is
needed (a busy upload session, a node at its cap) holds no more of it than
Hypercorn's own queue. What one connection can hold is therefore bounded:
one socket read in h11 (`SOCKET_READ`, node/tuning.py), Hypercorn's queue of
`APP_QUEUE` messages of at most one read each, and `HIGH_WATER` plus one
message here.

A body must also keep moving (`BodyPace`): a client that sends nothing for
the read timeout, or less than the minimum rate over each stretch of that
length, gets 408 and its connection closed, so a trickling client cannot
hold an upload session, a request slot or its buffers for ever. Only time
spent waiting for the client counts: while the node itself is slow to
consume (disk, copies to peers), the client is not at fault.

A handler may answer without reading the body at all (a chunk that starts at
the wrong offset, an unknown session, a manifest over the size limit). The
back-pressure must then stop, or the server's own queue of body messages
fills and the response never completes. So once the handler has answered,
the body is abandoned: what is buffered is dropped, up to `DRAIN_LIMIT` more
bytes are read and dropped so the connection can carry the next request, and
past that (or when the body is known to be longer, or was too slow) the
response says `Connection: close`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import request
from quart.wrappers import Request, Response
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

from node.api.errors import BodyTimeout, TooLarge, error_response, first_leaf
from node.cluster.errors import ClusterError
from node.storage.errors import StorageError

log = logging.getLogger(__name__)

HIGH_WATER = 4 << 20
APP_QUEUE = 2  # body messages Hypercorn queues per request (its default, 10, held 10 MiB)
DRAIN_LIMIT = 1 << 20  # unread bytes dropped to keep a connection reusable
DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class BodyPace:
    """How slowly a client may send a body before its request is given up."""

    read_timeout: float  # seconds without a byte
    min_rate: float  # bytes per second over each read_timeout spent waiting; 0: no floor


class BoundedBody(TrioBody):
    def __init__(
        self, expected_content_length: int | None, max_content_length: int | None
    ) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.expected = expected_content_length
        self.pace: BodyPace | None = None
        self._wanted = trio.Event()  # set once the handler (or the drain) reads
        self._drained = trio.Event()
        self._arrived = trio.Event()
        self._abandoned = False
        self._too_slow = False
        self._received = 0
        self._discarded = 0
        self._waited = 0.0  # seconds spent waiting for the client in this rate window
        self._window_bytes = 0  # bytes that arrived in this rate window

    async def __anext__(self) -> bytes:
        # As Quart's, but the buffer itself is handed over instead of a copy of it:
        # blob bodies are large, and every consumer here takes any bytes-like value.
        if self._must_raise is not None:
            raise self._must_raise
        self._wanted.set()
        if not self._complete.is_set():
            await self._wait_for_client()
        if self._complete.is_set() and len(self._data) == 0:
            raise StopAsyncIteration()
        data, self._data = self._data, bytearray()
        self._has_data.clear()
        self._drained.set()
        return data  # type: ignore[return-value]

    def __await__(self) -> Any:
        self._wanted.set()
        return super().__await__()

    async def _wait_for_client(self) -> None:
        """Wait for the next bytes; BodyTimeout when the client is too slow."""
        pace = self.pace
        if pace is None:
            await self._has_data.wait()
            return
        idle_deadline = trio.current_time() + pace.read_timeout
        while not self._has_data.is_set():
            started = trio.current_time()
            window_end = started + pace.read_timeout - self._waited
            with trio.move_on_at(min(idle_deadline, window_end)):
                await self._has_data.wait()
            now = trio.current_time()
            self._waited += now - started
            if self._waited >= pace.read_timeout:
                if self._window_bytes < pace.min_rate * pace.read_timeout:
                    self._give_up(f"fewer than {pace.min_rate:g} bytes/s "
                                  f"over {pace.read_timeout:g} s")
                self._waited, self._window_bytes = 0.0, 0
            if not self._has_data.is_set() and now >= idle_deadline:
                self._give_up(f"nothing for {pace.read_timeout:g} s")

    def _give_up(self, why: str) -> None:
        self._too_slow = True
        self._must_raise = BodyTimeout(f"the request body arrived too slowly: {why}")
        raise self._must_raise

    async def wanted(self) -> None:
        await self._wanted.wait()

    def append(self, data: bytes) -> None:
        self._received += len(data)
        self._window_bytes += len(data)
        if self._abandoned:
            self._discarded += len(data)
            self._arrived.set()
            return
        super().append(data)

    def set_complete(self) -> None:
        super().set_complete()
        self._arrived.set()

    async def wait_for_room(self) -> None:
        while len(self._data) > HIGH_WATER and self._must_raise is None and not self._abandoned:
            self._drained = trio.Event()
            await self._drained.wait()

    async def abandon(self) -> bool:
        """Drop the unread body; True when all of it arrived, so the connection can be reused."""
        self._abandoned = True
        self._discarded += len(self._data)
        self._data.clear()
        self._drained.set()
        self._wanted.set()
        unread = None if self.expected is None else self.expected - self._received
        if self._too_slow or (unread is not None and unread > DRAIN_LIMIT):
            return self._complete.is_set()
        with trio.move_on_after(DRAIN_SECONDS):
            while not self._complete.is_set() and self._discarded <= DRAIN_LIMIT:
                self._arrived = trio.Event()
                await self._arrived.wait()
        return self._complete.is_set()


def _has_body(request: Request) -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return "Transfer-Encoding" in request.headers


class BoundedRequest(TrioRequest):
    body_class = BoundedBody


class BoundedHTTPConnection(TrioASGIHTTPConnection):
    _finishing = False  # set as the response's last message goes out

    def _create_request_from_scope(self, send: ASGISendCallable) -> Request:
        request = super()._create_request_from_scope(send)
        if isinstance(request.body, BoundedBody):
            request.body.pace = getattr(self.app, "body_pace", None)
        return request

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        if isinstance(body, BoundedBody) and _has_body(request):
            await body.wanted()
        while True:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
                elif isinstance(body, BoundedBody):
                    await body.wait_for_room()
            elif message["type"] == "http.disconnect":
                break
        # Hypercorn also reports the end of a response that did not read the whole
        # body as a disconnect, from inside the response's last send: cancelling
        # then would stop it from closing the connection, and leave it open.
        if not self._finishing:
            nursery.cancel_scope.cancel()

    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, send: ASGISendCallable
    ) -> None:
        admission = getattr(self.app, "admission", None)
        if admission is None:
            await self._answer(request, send)
        else:
            with admission.request(request.path, request.scope.get("client")) as refusal:
                await self._answer(request, send, refusal)
        nursery.cancel_scope.cancel()

    async def _answer(
        self, request: Request, send: ASGISendCallable, refusal: Exception | None = None
    ) -> None:
        if refusal is None:
            response = await self.app.handle_request(request)
        else:
            async with self.app.request_context(request):
                response = error_response(refusal)
        body = request.body
        if isinstance(body, BoundedBody) and not await body.abandon():
            if isinstance(response, Response):
                response.headers["Connection"] = "close"
        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        async def send_marking_the_end(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._finishing = True
            await send(message)

        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            try:
                await self._send_response(send_marking_the_end, response)
            except* (ClusterError, StorageError) as group:  # raised through the stream's nursery
                # The status line is gone: the only honest answer left is a short
                # body, so the connection closes without its last message and the
                # client sees the transfer fail (never bytes that are not the blob's).
                log.warning("%s %s cut short after the headers: %s",
                            request.method, request.path, first_leaf(group))


async def read_body_bounded(limit: int, what: str = "request body") -> bytes:
    """The whole body of the current request, or TooLarge once it passes `limit` bytes
    (at once when its Content-Length says it will)."""
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{what} too large", detail={"limit": limit})
    body = bytearray()
    async for piece in request.body:
        body += piece
        if len(body) > limit:
            raise TooLarge(f"{what} too large", detail={"limit": limit})
    return bytes(body)
