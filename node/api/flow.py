"""Request bodies with back-pressure.

Quart buffers a request body for the handler without bound: a client that
sends faster than the handler writes to disk would grow the node's memory
with the whole upload. `BoundedBody` lets the receiving task wait whenever
more than `HIGH_WATER` bytes are buffered, so a 1 GiB push stays within a few
MiB of memory; the client simply sees TCP slow down.
"""

from __future__ import annotations

import trio
from hypercorn.typing import ASGIReceiveCallable
from quart.wrappers import Request
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

HIGH_WATER = 4 << 20


class BoundedBody(TrioBody):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None):
        super().__init__(expected_content_length, max_content_length)
        self._drained = trio.Event()

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._drained.set()
        return data

    async def wait_for_room(self) -> None:
        while len(self._data) > HIGH_WATER and self._must_raise is None:
            self._drained = trio.Event()
            await self._drained.wait()


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
