"""Generated data-plane requests, sent after a real handshake, and garbage before any.

The fuzzer holds the secret, as a node does, and speaks the data plane's
framing (`node.cluster.data_frames`) with a field, a tag or a count wrong:
unknown kinds, a GET that carries bytes, counts past the largest chunk, a
PUT whose bytes do not hash to its id or stop short, a tampered or replayed
header, a frame of the wrong length. A node that closes the connection on a
bad frame is doing its job; one that answers a well-formed request answers
with a status the format knows. Whether every node is still up and still
serves what it stored is checked afterwards by the harness.
"""

from __future__ import annotations

import random

import trio
from blake3 import blake3

from consensus.engine import FrameSeal, dial_handshake
from consensus.raft.transport import FRAME_HEADER, TAG_BYTES, FrameReader
from node.cluster.data_frames import (
    ANSWER_KEY_CONTEXT,
    GET,
    GREETING,
    HEADER_BYTES,
    MAX_CHUNK,
    PUT,
    REQUEST_KEY_CONTEXT,
    STATUS_NAMES,
    frame_length,
    open_header,
    seal_header,
)
from scripts.fuzzing.raft_frames import raw_connection
from scripts.fuzzing.tally import Tally

FUZZ_ID = "fuzzer"
REQUESTS_PER_CONNECTION = 4
ANSWER_WAIT = 5.0  # seconds for an answer to a well-formed request


def _request(rng: random.Random, seal: FrameSeal) -> tuple[str, bytes, bool]:
    """One request as bytes to send, its name, and whether it is well formed (the
    node must answer it) or not (the node may close the connection)."""
    chunk = rng.randbytes(32)
    pick = rng.randrange(10)
    if pick < 3:
        return "get unknown chunk", seal_header(seal, GET, chunk, 0), True
    if pick == 3:
        data = rng.randbytes(rng.randrange(1, 4096))
        return "put wrong bytes", seal_header(seal, PUT, chunk, len(data)) + data, True
    if pick == 4:
        data = rng.randbytes(rng.randrange(1, 4096))
        cid = blake3(data).digest()
        return "put good bytes", seal_header(seal, PUT, cid, len(data)) + data, True
    if pick == 5:
        kind = rng.choice([0, 3, 255])
        return "unknown kind", seal_header(seal, kind, chunk, 0), False
    if pick == 6:
        return "get with bytes", seal_header(seal, GET, chunk, rng.randrange(1, 100)), False
    if pick == 7:
        count = rng.choice([MAX_CHUNK + 1, 2**63, 2**64 - 1])
        return "count past the largest chunk", seal_header(seal, PUT, chunk, count), False
    if pick == 8:
        frame = bytearray(seal_header(seal, GET, chunk, 0))
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        return "tampered header", bytes(frame), False
    payload = rng.randbytes(rng.choice([0, 1, HEADER_BYTES - 1, HEADER_BYTES + 1, 300]))
    return "frame of the wrong length", b"".join(seal.seal(payload)), False


async def _conversation(address: str, secret: bytes, rng: random.Random, tally: Tally) -> None:
    """One connection: a handshake, then a few requests until the node hangs up."""
    host, _, port = address.rpartition(":")
    try:
        with trio.fail_after(ANSWER_WAIT * 2):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                reader = FrameReader(stream)
                agreed = await dial_handshake(stream, reader, secret, FUZZ_ID, GREETING)
                tally.count("data plane", "handshakes")
                requests = agreed.seal(REQUEST_KEY_CONTEXT)
                answers = agreed.seal(ANSWER_KEY_CONTEXT)
                for _ in range(REQUESTS_PER_CONNECTION):
                    name, data, well_formed = _request(rng, requests)
                    tally.frames += 1
                    await stream.send_all(data)
                    if rng.random() < 0.1:  # the same frame again: a replay
                        await stream.send_all(data)
                        tally.count("data plane", f"{name}, replayed")
                        return
                    if not well_formed:
                        tally.count("data plane", name)
                        return
                    header = open_header(
                        answers, await _answer_body(reader, answers), request=False
                    )
                    if header.count:
                        await reader.read_exactly(header.count)
                    tally.count("data plane", f"{name}: {STATUS_NAMES[header.code]}")
    except (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        tally.count("data plane", "connections dropped by node")
    except trio.TooSlowError:
        tally.count("data plane", "no answer in time")


async def _answer_body(reader: FrameReader, answers: FrameSeal) -> bytes:
    frame_length(answers, await reader.read_exactly(FRAME_HEADER))
    return await reader.read_exactly(HEADER_BYTES + TAG_BYTES)


def raw_bytes(rng: random.Random) -> bytes:
    """What a stranger might write to a data-plane port, with no (or a wrong) handshake."""
    pick = rng.randrange(4)
    if pick == 0:
        return rng.randbytes(rng.randrange(1, 500))
    if pick == 1:  # a handshake answer with a wrong proof
        return b"\x00\x00\x00\x02n1" + rng.randbytes(64)
    if pick == 2:
        return b"\xff\xff\xff\xff" + rng.randbytes(10)
    return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def fuzz_data_plane(
    members: dict[str, str], secret: bytes, seed: int, count: int, tally: Tally,
) -> None:
    """About `count` requests spread over the members (id -> data-plane address), a
    few per connection, then a tenth as many raw garbage connections."""
    rng = random.Random(f"{seed}:data plane")
    ids = sorted(members)
    for _ in range(max(1, count // REQUESTS_PER_CONNECTION)):
        await _conversation(members[rng.choice(ids)], secret, rng, tally)
    for _ in range(max(1, count // 10)):
        await raw_connection(members[rng.choice(ids)], raw_bytes(rng), tally,
                             channel="data plane raw", after_challenge=False)
