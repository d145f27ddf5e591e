"""A node's output: to the console, each line prefixed with the node id, and to its log file.

Memory stays bounded: output is read in fixed-size pieces and a line longer
than MAX_LINE is cut into pieces of that size. The log file stays bounded on
disk too: past LOG_CAP it moves to `node-k.log.1` (replacing the previous
one) and a fresh file starts, so a killed node's last lines are always in
`node-k.log` or just before, in `node-k.log.1`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import trio

KiB, MiB = 1024, 1024 * 1024
MAX_LINE = 16 * KiB
READ_SIZE = 64 * KiB
LOG_CAP = 16 * MiB


class LineSplitter:
    """Cuts a byte stream into lines, holding at most MAX_LINE bytes of an unfinished one."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._pending = bytearray()

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        self._pending += data
        lines: list[bytes] = []
        while True:
            end = self._pending.find(b"\n")
            if end < 0 or end > self._max_line:
                if len(self._pending) < self._max_line:
                    return lines
                end = self._max_line
                lines.append(bytes(self._pending[:end]))
                del self._pending[:end]
                continue
            lines.append(bytes(self._pending[:end]).rstrip(b"\r"))
            del self._pending[: end + 1]

    def flush(self) -> list[bytes]:
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest] if rest else []


class NodeLog:
    """The append-only log file of one node, rotated once past `cap` bytes."""

    def __init__(self, path: Path, cap: int = LOG_CAP) -> None:
        self.path = path
        self._cap = cap
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")

    def write(self, lines: list[bytes]) -> None:
        self._file.write(b"".join(line + b"\n" for line in lines))
        self._file.flush()  # a node killed right after a line still leaves it on disk
        if self._file.tell() > self._cap:
            self._file.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "ab")

    def close(self) -> None:
        self._file.close()


def announce(text: str, console: BinaryIO | None = None) -> None:
    """One line of the supervisor's own, prefixed so it stands out among the nodes'."""
    out = console or sys.stdout.buffer
    out.write(f"cluster | {text}\n".encode())
    out.flush()


async def copy_output(
    node_id: str, stream: trio.abc.ReceiveStream, log: NodeLog, console: BinaryIO | None = None
) -> None:
    """Until the node closes its output: every line to the console (as `n2 | …`) and the log.

    Writes are small, unsynced appends, so they are done inline rather than
    in a worker thread."""
    out = console or sys.stdout.buffer
    prefix = f"{node_id} | ".encode()
    splitter = LineSplitter()

    def emit(lines: list[bytes]) -> None:
        if lines:
            out.write(b"".join(prefix + line + b"\n" for line in lines))
            out.flush()
            log.write(lines)

    while chunk := await stream.receive_some(READ_SIZE):
        emit(splitter.feed(chunk))
    emit(splitter.flush())
