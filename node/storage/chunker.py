"""Cutting a byte stream into fixed-size chunks, without I/O.

The spool feeds whatever arrives from the network to a `ChunkCutter`, which
answers with the pieces to append to the current chunk and where a chunk
ends. Keeping this pure lets the boundary cases (a piece that ends exactly
on a boundary, one that spans several chunks, an empty blob) be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes to append to the current chunk; `closes` says the chunk is then full."""

    data: memoryview
    closes: bool


class ChunkCutter:
    def __init__(self, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self.filled = 0  # bytes in the current, open chunk

    def cut(self, data: bytes | bytearray | memoryview) -> list[Piece]:
        view = memoryview(data).cast("B")
        pieces: list[Piece] = []
        while view:
            room = self.chunk_size - self.filled
            take = view[:room]
            view = view[room:]
            self.filled += len(take)
            closes = self.filled == self.chunk_size
            if closes:
                self.filled = 0
            pieces.append(Piece(take, closes))
        return pieces

