"""Cutting streams at chunk boundaries, whatever sizes the network delivers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.storage.chunker import ChunkCutter


def cut_all(chunk_size: int, pieces: list[bytes]) -> list[bytes]:
    """Feed pieces to a cutter and rebuild the chunks it delimits."""
    cutter = ChunkCutter(chunk_size)
    chunks, current = [], bytearray()
    for data in pieces:
        for piece in cutter.cut(data):
            current += piece.data
            if piece.closes:
                chunks.append(bytes(current))
                current.clear()
    if current:
        chunks.append(bytes(current))
    return chunks


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 33, 160])
def test_blob_sizes_at_and_around_boundaries(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    chunks = cut_all(16, [data])
    assert b"".join(chunks) == data
    assert all(len(c) == 16 for c in chunks[:-1])
    assert len(chunks) == (size + 15) // 16
    if chunks:
        assert 0 < len(chunks[-1]) <= 16


def test_empty_blob_has_no_chunks() -> None:
    assert cut_all(16, []) == []
    assert cut_all(16, [b"", b""]) == []


def test_piece_ending_exactly_on_a_boundary_closes_the_chunk() -> None:
    cutter = ChunkCutter(4)
    pieces = cutter.cut(b"abcd")
    assert [(bytes(p.data), p.closes) for p in pieces] == [(b"abcd", True)]
    assert cutter.filled == 0


def test_one_piece_spanning_several_chunks_is_split() -> None:
    cutter = ChunkCutter(4)
    cutter.cut(b"ab")
    pieces = cutter.cut(b"cdefghij")
    assert [(bytes(p.data), p.closes) for p in pieces] == [
        (b"cd", True), (b"efgh", True), (b"ij", False)
    ]


@given(
    data=st.binary(max_size=300),
    splits=st.lists(st.integers(0, 300), max_size=10),
    chunk_size=st.integers(1, 64),
)
def test_chunks_do_not_depend_on_how_the_stream_was_split(
    data: bytes, splits: list[int], chunk_size: int
) -> None:
    cuts = sorted({min(s, len(data)) for s in splits})
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=False)]
    assert cut_all(chunk_size, pieces) == cut_all(chunk_size, [data])
    expected = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert cut_all(chunk_size, pieces) == expected


def test_zero_chunk_size_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkCutter(0)
