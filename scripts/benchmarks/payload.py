"""The bytes a benchmark pushes: one random file, made distinct per upload by a salt.

Both registries skip work for content they already hold (Distribution keeps
an existing blob, Flotilla an existing chunk), so every measured upload must
carry bytes neither has seen. The random file is written once; an upload's
blob is `salt + file`, repeated (each repetition with its salt) up to the
wanted size. The salts differ in length, which shifts every fixed-size chunk
boundary, so no chunk of one upload equals a chunk of another.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
READ_BLOCK = MiB


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            f.write(block)
            left -= len(block)


@dataclass(frozen=True)
class Blob:
    """A salted view of the random file: `size` bytes with a known sha256 digest."""

    source: Path
    salt: bytes
    size: int
    digest: str

    @classmethod
    def salted(cls, source: Path, label: str, serial: int, size: int | None = None) -> Blob:
        """The blob for upload number `serial`; `size` defaults to salt + whole file."""
        salt = f"flotilla-bench {label}\n".encode() + b"#" * serial
        if size is None:
            size = len(salt) + source.stat().st_size
        blob = cls(source, salt, size, "")
        hasher = hashlib.sha256()
        for block in blob.read(0, size):
            hasher.update(block)
        return cls(source, salt, size, "sha256:" + hasher.hexdigest())

    def read(self, start: int, length: int) -> Iterator[bytes]:
        """The bytes [start, start + length) in blocks of at most READ_BLOCK."""
        file_size = self.source.stat().st_size
        period = len(self.salt) + file_size
        end = min(start + length, self.size)
        with open(self.source, "rb", buffering=0) as f:
            position = start
            while position < end:
                offset = position % period
                if offset < len(self.salt):
                    block = self.salt[offset : offset + end - position]
                else:
                    f.seek(offset - len(self.salt))
                    block = f.read(min(READ_BLOCK, end - position, period - offset))
                yield block
                position += len(block)
