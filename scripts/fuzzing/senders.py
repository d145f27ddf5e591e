"""How a generated case reaches a node: through httpx, or as raw bytes on a socket.

httpx refuses to send what is not HTTP (a header with a line break, a path
with `..` left in, a Content-Length that lies), so those cases write their
bytes to a TCP connection themselves and read back only the status line.
Every answer is counted, and any 5xx other than 503 is a failure that names
the request and the case that sent it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import trio

from scripts.fuzzing.tally import Failure, Tally, is_server_failure

RAW_TIMEOUT = 5.0
RAW_READ_LIMIT = 64 * 1024
Headers = Sequence[tuple[str, str | bytes]]


def describe_body(body: bytes) -> str:
    if not body:
        return "no body"
    return (f"{len(body)} B body, sha256 {hashlib.sha256(body).hexdigest()[:16]}…, "
            f"starting {body[:120]!r}")


@dataclass
class Sender:
    """Sends the requests of one case and counts their answers."""

    client: httpx.AsyncClient
    tally: Tally
    target: str
    case: int
    case_name: str
    verbose: bool = False

    def _failed(self, what: str, why: str) -> None:
        self.tally.fail(Failure(self.target, self.case, self.case_name, what, why))

    def _show(self, what: str, outcome: str) -> None:
        if self.verbose:
            print(f"  {outcome:<14} {what[:300]}", flush=True)

    async def http(
        self, method: str, base: str, target: str, headers: Headers = (), body: bytes = b"",
        *, channel: str = "http", expect: tuple[int, ...] | None = None,
    ) -> httpx.Response | None:
        """One request; `target` is the raw path and query, sent as written."""
        what = f"{method} {base}{target} headers={list(headers)!r} {describe_body(body)}"
        self.tally.requests += 1
        url = httpx.URL(base).copy_with(raw_path=target.encode("ascii"))
        # Text outside ASCII goes as its UTF-8 bytes, as a careless client would send it.
        encoded = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
        try:
            response = await self.client.request(method, url, headers=encoded, content=body or None)
        except httpx.LocalProtocolError:
            outcome = "not sendable (httpx)"  # h11 will not write it; the raw cases do
            self.tally.count(channel, outcome)
            self._show(what, outcome)
            return None
        except httpx.HTTPError as exc:
            outcome = f"error {type(exc).__name__}"
            self.tally.count(channel, outcome)
            self._show(what, outcome)
            return None
        status = response.status_code
        self.tally.count(channel, status)
        self._show(what, str(status))
        if is_server_failure(status):
            self._failed(what, f"status {status}: {response.text[:300]!r}")
        elif expect is not None and status not in expect:
            self._failed(what, f"status {status}, expected one of {expect}: "
                               f"{response.text[:200]!r}")
        return response

    async def raw(self, base: str, data: bytes, *, channel: str = "raw") -> int | None:
        """Write `data` on a fresh connection; the status it answers, None if none."""
        what = f"raw bytes to {base}: {describe_body(data)}"
        self.tally.requests += 1
        parts = urlsplit(base)
        status: int | None = None
        outcome = "closed without answer"
        try:
            with trio.fail_after(RAW_TIMEOUT):
                stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
                async with stream:
                    try:
                        await stream.send_all(data)
                    except trio.BrokenResourceError:
                        pass  # the node hung up mid-request: an answer of sorts
                    head = await _read_status_line(stream)
            if head is not None:
                status = head
                outcome = str(head)
        except trio.TooSlowError:
            outcome = "no answer in 5 s"
        except (OSError, trio.BrokenResourceError) as exc:
            outcome = f"error {type(exc).__name__}"
        self.tally.count(channel, outcome)
        self._show(what, outcome)
        if status is not None and is_server_failure(status):
            self._failed(what, f"status {status}")
        return status


async def _read_status_line(stream: trio.SocketStream) -> int | None:
    buffer = b""
    while b"\r\n" not in buffer and len(buffer) < RAW_READ_LIMIT:
        try:
            data = await stream.receive_some(4096)
        except (trio.BrokenResourceError, OSError):
            break
        if not data:
            break
        buffer += data
    line = buffer.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None
