"""Reading a blob: the chunks a range touches, the first one in hand, the rest in order."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from consensus.engine import Recipe
from node.cluster.blob_reader import BlobReader, chunk_spans
from node.cluster.errors import NoHolderReachable


@given(size=st.integers(1, 500), chunk_size=st.integers(1, 64), data=st.data())
def test_range_spans_cover_exactly_the_requested_bytes(
    size: int, chunk_size: int, data: st.DataObject
) -> None:
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    blob = bytes(i % 251 for i in range(size))
    chunks = [blob[i : i + chunk_size] for i in range(0, size, chunk_size)]
    out = b"".join(chunks[i][s:e] for i, s, e in chunk_spans(size, chunk_size, first, last))
    assert out == blob[first : last + 1]


class ScriptedFetcher:
    """Serves chunks from a dict, recording what was asked and how many at once."""

    def __init__(self, chunks: dict[str, bytes], *, missing: set[str] = frozenset()) -> None:
        self.chunks = chunks
        self.missing = missing
        self.asked: list[str] = []
        self.in_flight = self.most_in_flight = 0

    async def get(self, cid: str) -> bytes:
        self.asked.append(cid)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await trio.sleep(0.001)
            if cid in self.missing:
                raise NoHolderReachable(chunk=cid)
            return self.chunks[cid]
        finally:
            self.in_flight -= 1


def blob_of(count: int, chunk_size: int = 4) -> tuple[Recipe, dict[str, bytes], bytes]:
    chunks = {f"c{i}": bytes([i]) * chunk_size for i in range(count)}
    data = b"".join(chunks.values())
    return Recipe("sha256:x", len(data), chunk_size, tuple(chunks)), chunks, data


async def read_all(body: object) -> bytes:
    return b"".join([piece async for piece in body])  # type: ignore[attr-defined]


async def test_a_whole_blob_streams_in_order_with_a_bounded_window() -> None:
    recipe, chunks, data = blob_of(10)
    fetcher = ScriptedFetcher(chunks)
    reader = BlobReader(fetcher, window=3)  # type: ignore[arg-type]
    assert await read_all(await reader.body(recipe)) == data
    assert sorted(fetcher.asked) == sorted(recipe.chunks)  # each once
    # The chunk being waited on, and at most `window` beyond it.
    assert fetcher.most_in_flight <= 3 + 1


async def test_a_range_fetches_only_the_chunks_it_touches() -> None:
    recipe, chunks, data = blob_of(10)
    fetcher = ScriptedFetcher(chunks)
    reader = BlobReader(fetcher, window=4)  # type: ignore[arg-type]
    assert await read_all(await reader.body(recipe, 9, 17)) == data[9:18]
    assert sorted(fetcher.asked) == ["c2", "c3", "c4"]


async def test_the_first_chunk_is_fetched_before_the_body_is_handed_out() -> None:
    recipe, chunks, _ = blob_of(3)
    reader = BlobReader(ScriptedFetcher(chunks, missing={"c0"}), window=2)  # type: ignore[arg-type]
    with pytest.raises(NoHolderReachable):
        await reader.body(recipe)


async def test_a_later_chunk_no_holder_provides_ends_the_stream_after_the_bytes_before_it() -> None:
    recipe, chunks, data = blob_of(4)
    reader = BlobReader(ScriptedFetcher(chunks, missing={"c2"}), window=2)  # type: ignore[arg-type]
    received = bytearray()
    # Raised from inside the window's nursery, so it arrives in a group.
    with pytest.raises(ExceptionGroup) as caught:
        async for piece in await reader.body(recipe):
            received += piece
    assert caught.group_contains(NoHolderReachable, depth=None)
    assert bytes(received) == data[:8]


async def test_an_empty_blob_is_an_empty_body_and_fetches_nothing() -> None:
    fetcher = ScriptedFetcher({})
    reader = BlobReader(fetcher, window=2)  # type: ignore[arg-type]
    assert await read_all(await reader.body(Recipe("sha256:x", 0, 4, ()))) == b""
    assert fetcher.asked == []
