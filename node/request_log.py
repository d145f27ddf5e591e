"""Which request a log record belongs to, and the one line that records a request.

`RequestObserver` wraps the node's ASGI application. For every HTTP request
it settles the request id (the client's `X-Request-Id` when it is
well-formed, else a fresh random one), puts it back in the response
headers, and rewrites the request's own header to it, so a relay to a peer
(`node/cluster/forward.py` passes the header on) carries the same id. While
the request is handled, `current_request` holds the id, the method and the
path, and `ContextFilter` copies them onto every record any logger emits,
error lines included. When the request is done, the observer hands its
route, status, duration and body sizes to the node's metrics and, with
`access_log`, writes one line to the `flotilla.access` logger.

Only the path is ever recorded, never the query string: an upload's query
can carry its state, and Hypercorn's own access line (which logs it) is off.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")

access_log = logging.getLogger("flotilla.access")


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    method: str
    path: str


current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)
# The node a task works for: several nodes may share one process (the tests do),
# and each node's tasks inherit it from `serve`, which sets it.
current_node: ContextVar[str | None] = ContextVar("current_node", default=None)

# (route path, method, status, seconds, request body bytes, response body bytes)
RequestObserved = Callable[[str, str, int, float, int, int], None]


def current_request_id() -> str | None:
    context = current_request.get()
    return context.request_id if context is not None else None


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id if it sent one well-formed, else a new random one."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            if REQUEST_ID_RE.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(8)


class ContextFilter(logging.Filter):
    """Puts the node id and, inside a request, its id, method and path on every record
    (a handler's filter, so it sees the records of every logger)."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node_id = current_node.get() or self.node_id
        context = current_request.get()
        if context is not None and not hasattr(record, "request_id"):
            record.request_id = context.request_id
            record.method = context.method
            record.path = context.path
        request_id = getattr(record, "request_id", None)
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class RequestObserver:
    """ASGI middleware: request id, request context for the log, metrics and access line."""

    def __init__(self, app: Any, observed: RequestObserved, *, access: bool = False) -> None:
        self.app = app
        self.observed = observed
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        request_id = request_id_from(headers)
        headers = [(n, v) for n, v in headers if n.lower() != REQUEST_ID_HEADER]
        headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
        scope = {**scope, "headers": headers}
        method, path = str(scope.get("method", "")), str(scope.get("path", ""))
        received = sent = 0
        status = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
            return message

        async def tagging_send(message: dict[str, Any]) -> None:
            nonlocal sent, status
            kind = message.get("type")
            if kind == "http.response.start":
                status = int(message.get("status", 0))
                message = {
                    **message,
                    "headers": [*message.get("headers", []),
                                (REQUEST_ID_HEADER, request_id.encode("ascii"))],
                }
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        token = current_request.set(RequestContext(request_id, method, path))
        started = time.monotonic()
        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            seconds = time.monotonic() - started
            if status:  # no status: the client left before any answer went out
                self.observed(path, method, status, seconds, received, sent)
                if self.access:
                    access_log.info(
                        "%s %s %d %.1f ms", method, path, status, seconds * 1000,
                        extra={"status": status, "duration_seconds": round(seconds, 6)},
                    )
            current_request.reset(token)
