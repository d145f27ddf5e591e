"""The content digest as a value: `algorithm:hex`, already checked.

The API's grammar parses digests out of URLs into this type; the spool
verifies uploads against it. It lives here, below both, so storage never
reaches up into the HTTP layer for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest, `algorithm:hex`, always lowercase hex of the right length."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())
