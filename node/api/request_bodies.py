"""Request bodies with back-pressure, and what happens to the part a handler leaves unread.

Quart buffers a request body for the handler without bound: a client that
sends faster than the handler writes to disk would grow the node's memory
with the whole upload. `BoundedBody` lets the receiving task wait whenever
more than `HIGH_WATER` bytes are buffered, so a 1 GiB push stays within a few
MiB of memory; the client simply sees TCP slow down.

A handler may answer without reading the body at all (a chunk that starts at
the wrong offset, an unknown session, a manifest over the size limit). The
back-pressure must then stop, or the server's own queue of body messages
fills and the response never completes. So once the handler has answered,
the body is abandoned: what is buffered is dropped, up to `DRAIN_LIMIT` more
bytes are read and dropped so the connection can carry the next request, and
past that the response says `Connection: close`.
"""

from __future__ import annotations

from typing import cast

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.wrappers import Request, Response
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

HIGH_WATER = 4 << 20
DRAIN_LIMIT = 1 << 20  # unread bytes dropped to keep a connection reusable
DRAIN_SECONDS = 2.0


class BoundedBody(TrioBody):
    def __init__(
        self, expected_content_length: int | None, max_content_length: int | None
    ) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._drained = trio.Event()
        self._arrived = trio.Event()
        self._abandoned = False
        self._discarded = 0

    async def __anext__(self) -> bytes:
        # As Quart's, but the buffer itself is handed over instead of a copy of it:
        # blob bodies are large, and every consumer here takes any bytes-like value.
        if self._must_raise is not None:
            raise self._must_raise
        if not self._complete.is_set():
            await self._has_data.wait()
        if self._complete.is_set() and len(self._data) == 0:
            raise StopAsyncIteration()
        data, self._data = self._data, bytearray()
        self._has_data.clear()
        self._drained.set()
        return data  # type: ignore[return-value]

    def append(self, data: bytes) -> None:
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
        with trio.move_on_after(DRAIN_SECONDS):
            while not self._complete.is_set() and self._discarded <= DRAIN_LIMIT:
                self._arrived = trio.Event()
                await self._arrived.wait()
        return self._complete.is_set()


class BoundedRequest(TrioRequest):
    body_class = BoundedBody


class BoundedHTTPConnection(TrioASGIHTTPConnection):
    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
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
        nursery.cancel_scope.cancel()

    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, send: ASGISendCallable
    ) -> None:
        response = await self.app.handle_request(request)
        body = request.body
        if isinstance(body, BoundedBody) and not await body.abandon():
            if isinstance(response, Response):
                response.headers["Connection"] = "close"
        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._send_response(send, response)
        nursery.cancel_scope.cancel()
