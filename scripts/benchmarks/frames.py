"""`scripts/bench frames`: what sealing Raft frames costs, per frame, on one core.

A frame here is a map holding one random byte string of 1 KiB, 64 KiB or
8 MiB, about what a heartbeat-sized message, a batch of small entries and a
full append carry. For each size both sides of the link are timed in this
process, without sockets: the sender's encode (msgpack, then the old length
prefix or the two keyed-BLAKE3 tags of `FrameSeal`) and the receiver's
verify and decode (nothing to verify for plain frames, both tags for sealed
ones, then msgpack). The ratio sealed/plain in frames/s is the cost of frame
authentication. Last, the two MACs the design weighed, keyed BLAKE3 and
HMAC-SHA256, tag the same bytes at 1 KiB and 8 MiB. Numbers on a shared
machine are rough: compare rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable
from functools import partial

import msgpack
from blake3 import blake3

from consensus.raft.transport import (
    FRAME_HEADER,
    TAG_BYTES,
    FrameSeal,
    decode_frame,
    encode_frame,
)
from scripts.benchmarks.table import render

SIZES = {"1 KiB": 1 << 10, "64 KiB": 64 << 10, "8 MiB": 8 << 20}
_LENGTH = struct.Struct(">I")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="time spent on each measurement (default 0.5)"
    )


def _rate(operation: Callable[[], None], seconds: float) -> float:
    """Operations per second of `operation`, timed alone (set-up outside the timing)."""
    spent, done = 0.0, 0
    deadline = time.perf_counter() + seconds
    while done < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        operation()
        spent += time.perf_counter() - start
        done += 1
    return done / spent


def _plain_encode(frame: object) -> None:
    payload = msgpack.packb(frame, use_bin_type=True)
    _LENGTH.pack(len(payload)) + payload  # the pre-FLR2 frame: length, then payload


def _sealed_encode(seal: FrameSeal, frame: object) -> None:
    b"".join(seal.seal(encode_frame(frame)))


class _SealedStream:
    """Frames sealed by one end and opened by the other, one at a time, as on a connection."""

    def __init__(self, payload: bytes) -> None:
        key = os.urandom(32)
        self.sender, self.receiver = FrameSeal(key), FrameSeal(key)
        self.payload = payload

    def next_frame(self) -> tuple[bytes, bytes]:
        header, payload, tag = self.sender.seal(self.payload)
        return header, payload + tag


def _sealed_decode_rate(payload: bytes, seconds: float) -> float:
    stream = _SealedStream(payload)
    spent, done = 0.0, 0
    deadline = time.perf_counter() + seconds
    while done < 5 or time.perf_counter() < deadline:
        header, body = stream.next_frame()  # what the sender did is not the receiver's cost
        start = time.perf_counter()
        length = stream.receiver.open_header(header)
        decode_frame(stream.receiver.open(length, body))
        spent += time.perf_counter() - start
        done += 1
    return done / spent


def _frame_rows(seconds: float) -> list[list[str]]:
    rows = []
    for name, size in SIZES.items():
        frame = {"t": "raft", "d": os.urandom(size)}
        payload = encode_frame(frame)
        seal = FrameSeal(os.urandom(32))
        measured = {
            "encode+MAC": (
                _rate(partial(_plain_encode, frame), seconds),
                _rate(partial(_sealed_encode, seal, frame), seconds),
            ),
            "verify+decode": (
                _rate(partial(decode_frame, payload), seconds),
                _sealed_decode_rate(payload, seconds),
            ),
        }
        for step, (plain, sealed) in measured.items():
            rows.append([
                f"{name} {step}", f"{plain:,.0f}", f"{plain * size / 1e6:,.0f}",
                f"{sealed:,.0f}", f"{sealed * size / 1e6:,.0f}", f"{sealed / plain:.2f}",
            ])
    return rows


def _mac_rows(seconds: float) -> list[list[str]]:
    key = os.urandom(32)
    prefix = bytes(12)  # what a tag covers besides the payload: sequence number and length
    rows = []
    for name in ("1 KiB", "8 MiB"):
        data = os.urandom(SIZES[name])

        def keyed_blake3(data: bytes = data) -> None:
            mac = blake3(prefix, key=key)
            mac.update(data)
            mac.digest(TAG_BYTES)

        def hmac_sha256(data: bytes = data) -> None:
            mac = hmac.new(key, prefix, hashlib.sha256)
            mac.update(data)
            mac.digest()

        for mac_name, tag in (("keyed BLAKE3", keyed_blake3), ("HMAC-SHA256", hmac_sha256)):
            rate = _rate(tag, seconds)
            rows.append([f"{name} {mac_name}", f"{1e6 / rate:,.1f}",
                         f"{rate * len(data) / 1e6:,.0f}"])
    return rows


def run(args: argparse.Namespace) -> int:
    print(f"Raft frames on one core, {args.seconds:g} s a measurement; "
          f"a sealed frame carries {FRAME_HEADER - 4 + TAG_BYTES} bytes of tags")
    print(render(
        ["frame", "plain frames/s", "plain MB/s", "sealed frames/s", "sealed MB/s",
         "sealed/plain"],
        _frame_rows(args.seconds),
    ))
    print()
    print(render(["tag only", "µs/frame", "MB/s"], _mac_rows(args.seconds)))
    return 0
