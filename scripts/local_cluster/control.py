"""The control protocol between `scripts/cluster COMMAND` and the running supervisor.

One Unix socket in the data folder (`.flotilla/cluster.sock`); one JSON
object per connection each way, on one line: the request
`{"op": "kill", "node": "n2", "signal": "SIGKILL"}`, the reply
`{"ok": true, "code": 0, "message": "…", "nodes": […]}`. A request is at most
MAX_REQUEST bytes and must arrive within REQUEST_SECONDS, so a stuck or
hostile client holds nothing. Reply codes are the command's exit codes:
0 done, 1 could not be done (no supervisor, node not running), 2 bad request
(unknown node id, unknown signal or command).
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

MAX_REQUEST = 4096
REQUEST_SECONDS = 5.0
SOCKET_NAME = "cluster.sock"
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
OPS = ("status", "kill", "stop", "start", "restart")
NODE_OPS = frozenset(OPS) - {"status"}
OK, FAILED, BAD_REQUEST = 0, 1, 2


class BadRequest(ValueError):
    """A request the supervisor refuses to act on (exit code 2)."""


class NoSupervisor(RuntimeError):
    """Nobody answers on the control socket."""


class ControlSocketInUse(RuntimeError):
    """Another supervisor already answers on this data folder's control socket."""


@dataclass(frozen=True)
class Request:
    op: str
    node: str | None = None
    signal: str | None = None


def reply(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": code == OK, "code": code, "message": message, **extra}


def parse_request(line: bytes) -> Request:
    """The request in one line of JSON; BadRequest says what is wrong with it."""
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request is not a JSON object")
    op, node, sig = body.get("op"), body.get("node"), body.get("signal")
    if op not in OPS:
        raise BadRequest(f"unknown command {op!r}: one of {', '.join(OPS)}")
    if op in NODE_OPS and not isinstance(node, str):
        raise BadRequest(f"{op} needs a node id")
    if sig is not None and (op != "kill" or not isinstance(sig, str)):
        raise BadRequest("only kill takes a signal, by name")
    return Request(op, node if op in NODE_OPS else None, sig)


def socket_path(data_root: Path) -> Path:
    path = data_root / SOCKET_NAME
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ValueError(f"{path}: too long for a Unix socket ({MAX_SOCKET_PATH} bytes at most);"
                         " choose a shorter --data")
    return path


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def claim_socket(path: Path) -> None:
    """Make room for this supervisor's socket: a file left by a supervisor that died is
    removed; one that still answers means another supervisor runs on this data folder."""
    if path.exists():
        if _answers(path):
            raise ControlSocketInUse(f"a cluster supervisor already runs for {path.parent}")
        path.unlink()


async def _read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(REQUEST_SECONDS):
        while b"\n" not in data:
            chunk = await stream.receive_some(MAX_REQUEST + 1 - len(data))
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                raise BadRequest(f"request longer than {MAX_REQUEST} bytes")
    return data.split(b"\n", 1)[0]


async def serve_control(
    path: Path,
    handle: Callable[[Request], Awaitable[dict[str, Any]]],
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests on `path` (claimed first) until cancelled, then remove it."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                response = await handle(parse_request(await _read_request(stream)))
            except BadRequest as exc:
                response = reply(BAD_REQUEST, str(exc))
            except (trio.TooSlowError, trio.BrokenResourceError):
                return
            except Exception as exc:  # noqa: BLE001 - one bad request must never stop the cluster
                response = reply(FAILED, f"could not be done: {exc!r}")
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(response).encode() + b"\n")

    try:
        await trio.serve_listeners(answer, [trio.SocketListener(sock)], task_status=task_status)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def ask(path: Path, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the supervisor and return its reply (blocking: used by the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoSupervisor(f"no cluster supervisor runs for {path.parent}") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise NoSupervisor(f"no cluster supervisor runs for {path.parent}") from exc
            raise
        conn.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    if not data:
        raise NoSupervisor(f"the cluster supervisor for {path.parent} closed without answering")
    answer: dict[str, Any] = json.loads(data)
    return answer
