"""Generated Raft frames, sent after a real handshake, and garbage before any.

Only the transport's public face is used (`Transport`, `set_peers`,
`stream_to`), so these keep working whatever the wire format becomes. The
fuzzer joins as a node of its own id, never one of the members': a holder of
the secret who impersonates a member can disrupt elections by design, and
that is not what is tested here. A node that drops the connection after a
bad frame is doing its job; the next frame goes on a new connection.
Forwarded membership changes with a valid operation are never generated:
they would really change the membership.
"""

from __future__ import annotations

import random
from typing import Any

import trio

from consensus.raft.messages import MessageType
from consensus.raft.transport import Transport
from scripts.fuzzing.tally import Tally

FUZZ_ID = "fuzzer"
FRAMES_PER_CONNECTION = 4


# Numbers at and past the 2**62 a term or index may reach, up to what a
# uint64 holds: a node that adopted one could not count on from it.
def huge(rng: random.Random) -> int:
    return rng.choice([2**62, 2**63 - 2, 2**63, 2**64 - 1])


def random_object(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack-encodable value, shallow enough to encode quickly."""
    kinds = ["int", "bigint", "neg", "str", "bytes", "bool", "none", "float"]
    if depth < 3:
        kinds += ["list", "map"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randrange(100)
    if kind == "bigint":
        return rng.choice([2**63 - 1, huge(rng), 2**32, 2**31 - 1])
    if kind == "neg":
        return -rng.choice([1, 2**31, 2**63])
    if kind == "str":
        return "".join(rng.choice("abcé漢\x00t") for _ in range(rng.randrange(12)))
    if kind == "bytes":
        return rng.randbytes(rng.randrange(64))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "float":
        return rng.choice([0.5, float("nan"), float("inf"), -1e308])
    if kind == "list":
        return [random_object(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_object(rng, 3): random_object(rng, depth + 1) for _ in range(rng.randrange(5))}


def _wrong(rng: random.Random) -> Any:
    return rng.choice([-1, huge(rng), huge(rng), "5", None, [], {}, b"x", 1.5, True,
                       rng.randrange(10**6)])


def raft_message(rng: random.Random, target: str) -> dict[str, Any]:
    """A Raft message near a real one, from the fuzzer, with a field or two wrong."""
    msg: dict[str, Any] = {
        "type": rng.choice([int(t) for t in MessageType] + [0, 13, 255, -1]),
        "from": FUZZ_ID, "to": rng.choice([target, "n1", "nobody", ""]),
        "term": rng.choice([0, 1, 2, rng.randrange(100), 2**63 - 2, huge(rng)]),
        "log_term": rng.randrange(10), "index": rng.choice([0, 1, rng.randrange(10**6)]),
        "entries": [], "commit": rng.choice([0, rng.randrange(10**6), huge(rng)]),
        "reject": rng.random() < 0.3, "reject_hint": rng.randrange(10),
        "snapshot": None, "context": rng.choice([b"", b"transfer", rng.randbytes(8)]),
    }
    if rng.random() < 0.4:
        msg["entries"] = [[rng.randrange(5), rng.randrange(10**6), rng.choice([0, 1, 2, 9]),
                           rng.randbytes(rng.randrange(40))] for _ in range(rng.randrange(4))]
    if rng.random() < 0.15:
        msg["snapshot"] = rng.choice([random_object(rng), {"index": 5, "term": 1}, [1, 2]])
    for _ in range(rng.choice([0, 1, 1, 2])):
        msg[rng.choice(list(msg))] = _wrong(rng)
    if rng.random() < 0.1:
        del msg[rng.choice(list(msg))]
    return {"t": "raft", "m": msg}


def frame(rng: random.Random, target: str) -> Any:
    """One frame: a Raft message, a forwarded request, a snapshot piece, or anything."""
    pick = rng.randrange(10)
    if pick < 4:
        return raft_message(rng, target)
    if pick == 4:  # a proposal from a non-member, of garbage or of a plausible map
        return {"t": "propose", "d": rng.choice([rng.randbytes(rng.randrange(200)), b"\x80",
                                                 b"\x81\xa1t\xa3tag", _wrong(rng)])}
    if pick == 5:  # never a valid operation: that would change the membership
        return {"t": "conf", "op": rng.choice(["ADD", "", 1, None, "rm"]),
                "node": random_object(rng)}
    if pick == 6:
        return {"t": "transfer", "to": rng.choice(["nobody", "", 5, None])}
    if pick == 7:
        return {"t": "snap", "x": rng.choice(["t1", "", "x" * 300, 5]),
                "d": rng.choice([rng.randbytes(rng.randrange(100)), "s"]),
                "o": rng.choice([0, 1, -1, huge(rng)]), "done": rng.choice([False, True, 0])}
    if pick == 8:
        return {"t": rng.choice(["", "RAFT", None, 7, "snapshot"]), "m": random_object(rng)}
    return random_object(rng)


def raw_bytes(rng: random.Random) -> bytes:
    """What a stranger might write to a Raft port, with no handshake (or a wrong one)."""
    pick = rng.randrange(5)
    if pick == 0:
        return rng.randbytes(rng.randrange(1, 500))
    if pick == 1:  # a length prefix claiming far more than the frame limit
        return b"\xff\xff\xff\xff" + rng.randbytes(10)
    if pick == 2:  # a handshake answer with a wrong proof
        return b"\x00\x00\x00\x05n1@ab" + rng.randbytes(64)
    if pick == 3:
        return b"\x00\x01\x00\x00" + b"x" * 100
    return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def _send_frames(transport: Transport, target: str, frames: list[Any],
                       tally: Tally) -> None:
    """Send `frames` after a handshake, reconnecting whenever the node hangs up."""
    pending = list(frames)
    while pending:
        try:
            async with transport.stream_to(target) as send:
                tally.count("raft", "handshakes")
                while pending:
                    obj = pending[0]
                    try:
                        await send(obj)
                    except (TypeError, ValueError, OverflowError):
                        tally.count("raft", "not encodable (skipped)")
                        pending.pop(0)
                        continue
                    pending.pop(0)
                    tally.frames += 1
                    tally.count("raft", "frames sent")
                    # A moment for the node to refuse it: a frame written after
                    # the node hung up counts as sent, but nobody reads it.
                    await trio.sleep(0.002)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            tally.count("raft", "connections dropped by node")
        except trio.TooSlowError:
            tally.count("raft", "handshake timed out")
            return


async def raw_connection(
    address: str, data: bytes, tally: Tally, *, channel: str = "raft raw",
    after_challenge: bool = True,
) -> None:
    """Write `data` to a fresh connection (after the node's challenge, unless it
    starts with 0xff or `after_challenge` is off) and read until the node hangs up."""
    host, _, port = address.rpartition(":")
    tally.frames += 1
    try:
        with trio.move_on_after(3):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                if after_challenge and data[:1] != b"\xff":
                    await stream.receive_some(36)  # the node's challenge
                await stream.send_all(data)
                while await stream.receive_some(4096):
                    pass
    except (OSError, trio.BrokenResourceError):
        pass
    tally.count(channel, "garbage connections")


async def _ignore(sender: str, frame: Any) -> None:
    """What the members send back once they learn our address (they dial us too)."""


async def fuzz_raft(
    members: dict[str, str], secret: bytes, seed: int, count: int, tally: Tally,
) -> None:
    """`count` generated frames spread over the members (id -> raft address), then
    a tenth as many raw garbage connections."""
    rng = random.Random(f"{seed}:raft")
    transport = Transport(FUZZ_ID, secret, "127.0.0.1:0", on_frame=_ignore)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        transport.set_peers(dict(members))
        ids = sorted(members)
        per_member: dict[str, list[Any]] = {m: [] for m in ids}
        for _ in range(count):
            target = rng.choice(ids)
            per_member[target].append(frame(rng, target))
        for target, frames in per_member.items():
            for start in range(0, len(frames), FRAMES_PER_CONNECTION):
                await _send_frames(transport, target,
                                   frames[start:start + FRAMES_PER_CONNECTION], tally)
        for _ in range(max(1, count // 10)):
            await raw_connection(members[rng.choice(ids)], raw_bytes(rng), tally)
        nursery.cancel_scope.cancel()
