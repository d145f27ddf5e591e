"""The data plane's wire format: its greeting, its keys, and the headers it seals.

A connection starts with the Raft transport's handshake (HMAC challenge over
fresh nonces, consensus/raft/transport.py) under a greeting of its own, then
carries requests from the dialler and answers from the listener, each
direction sealed with its own key. Every request and every answer is one
sealed header frame, ``length (4) | tag (16) | header (41) | tag (16)``, whose
header is ``kind (1) | chunk id (32) | byte count (8)``:

- GET: kind GET, the chunk's id, count 0. Its answer echoes the id, with
  status OK and the chunk's size, then that many raw bytes; or another status
  and count 0.
- PUT: kind PUT, the chunk's id and size, then that many raw bytes. Its
  answer echoes the id with OK once the chunk is durable, or why not.

Answers come in the order of the requests. The raw bytes are not sealed:
their integrity is the chunk's BLAKE3 content address, named in the
authenticated header, which the receiver checks before anything is kept or
passed on; their number is sealed, so bytes added or dropped on the way put
the next header out of place and its tag fails. This is what lets the
serving side `sendfile` a chunk straight from disk (a tag over the bytes
would need Python to read them) and lets nothing but BLAKE3 touch them on
the receiving side. Nothing here does I/O: `node/cluster/data_plane.py`
moves these frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from consensus.engine import FrameInvalid, FrameSeal, Greeting
from node.config import MiB

GREETING = Greeting(b"FLD1", "data plane", b"data plane client", b"data plane server")
# BLAKE3 key-derivation contexts, one per direction, none shared with Raft's.
REQUEST_KEY_CONTEXT = "flotilla data plane 2026-12 frame key, dialler to listener"
ANSWER_KEY_CONTEXT = "flotilla data plane 2026-12 frame key, listener to dialler"

# The largest chunk_size node/config.py allows: no announced count may be larger.
MAX_CHUNK = 256 * MiB

_HEADER = struct.Struct(">B32sQ")
HEADER_BYTES = _HEADER.size

GET = 1
PUT = 2
KINDS = (GET, PUT)

OK = 0
MISSING = 1  # not held here (GET)
REFUSED = 2  # the bytes do not hash to the id (PUT); nothing was kept
NO_SPACE = 3  # storing it would go below the free-space floor (PUT)
FAILED = 4  # the disk failed the operation
STATUSES = (OK, MISSING, REFUSED, NO_SPACE, FAILED)
STATUS_NAMES = {OK: "ok", MISSING: "missing", REFUSED: "refused", NO_SPACE: "no space",
                FAILED: "failed"}


class FrameOversized(FrameInvalid):
    """A header announcing more bytes than any chunk may have."""


@dataclass(frozen=True)
class Header:
    """One request or answer: its kind (a request) or status (an answer), the
    chunk's id as 32 bytes, and the count of raw bytes that follow it."""

    code: int
    chunk: bytes
    count: int

    @property
    def cid(self) -> str:
        return self.chunk.hex()


def seal_header(seal: FrameSeal, code: int, chunk: bytes, count: int) -> bytes:
    """The next frame of `seal`'s direction, ready to send."""
    return b"".join(seal.seal(_HEADER.pack(code, chunk, count)))


def frame_length(seal: FrameSeal, prefix: bytes) -> int:
    """Check the next frame's length and its tag (FrameForged); a data-plane frame
    holds exactly one header, so any other length is FrameInvalid."""
    length = seal.open_header(prefix)
    if length != HEADER_BYTES:
        raise FrameInvalid(f"data plane frame of {length} bytes, not {HEADER_BYTES}")
    return length


def open_header(seal: FrameSeal, body: bytes, *, request: bool) -> Header:
    """The header in `body` (payload and tag) once its tag is right and its
    fields make sense for a request or an answer."""
    code, chunk, count = _HEADER.unpack(seal.open(HEADER_BYTES, body))
    if count > MAX_CHUNK:
        raise FrameOversized(f"header announces {count} bytes, over {MAX_CHUNK}")
    if request and code not in KINDS:
        raise FrameInvalid(f"unknown request kind {code}")
    if not request and code not in STATUSES:
        raise FrameInvalid(f"unknown answer status {code}")
    if request and code == GET and count:
        raise FrameInvalid("a GET carries no bytes")
    return Header(code, chunk, count)
