"""Reading a blob, whole or one byte range, as a stream of its bytes in order.

A pull touches only the chunks its range covers (`chunk_spans`). The first
of them is obtained before the body is handed out, so a chunk no holder can
provide still fails the request with a proper error status instead of a
response cut short after its headers; the rest stream with a window of
chunks fetched ahead, from different holders at once, each one verified and
yielded in blob order. Getting one chunk (local disk, else hedged fetches
from its holders, shared between concurrent pulls) is `ChunkFetcher`'s job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NamedTuple

import trio

from consensus.engine import Recipe
from node.cluster.chunk_fetch import ChunkFetcher


class Span(NamedTuple):
    """The part of one chunk a byte range covers: [start, end) within chunk `index`."""

    index: int
    start: int
    end: int


def chunk_spans(size: int, chunk_size: int, first: int, last: int) -> list[Span]:
    """Which chunks the byte range [first, last] of a blob of `size` bytes touches."""
    if size == 0 or last < first:
        return []
    spans = []
    for index in range(first // chunk_size, last // chunk_size + 1):
        base = index * chunk_size
        start = max(first, base) - base
        end = min(last + 1, base + chunk_size, size) - base
        spans.append(Span(index, start, end))
    return spans


@dataclass
class _Slot:
    """A chunk of the window: fetched, failed, or still on its way."""

    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: Exception | None = None


class BlobReader:
    """Streams of blob bytes for one node, with `window` chunks fetched ahead."""

    def __init__(self, fetcher: ChunkFetcher, *, window: int) -> None:
        self.fetcher = fetcher
        self.window = window

    async def body(
        self, recipe: Recipe, first: int = 0, last: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes [first, last] of the blob (to its end when `last` is None).

        Returns once the first chunk is in hand, so NoHolderReachable or
        ChunkLost for it is raised here, before any response starts.
        """
        spans = chunk_spans(
            recipe.size, recipe.chunk_size, first, recipe.size - 1 if last is None else last
        )
        head = await self.fetcher.get(recipe.chunks[spans[0].index]) if spans else b""
        return self._stream(recipe, spans, head)

    async def _stream(
        self, recipe: Recipe, spans: list[Span], head: bytes
    ) -> AsyncIterator[bytes]:
        if not spans:
            return
        async with self._pieces(recipe, spans, head) as pieces:
            async for piece in pieces:
                yield piece

    @trio.as_safe_channel
    async def _pieces(
        self, recipe: Recipe, spans: list[Span], head: bytes
    ) -> AsyncIterator[bytes]:
        """The bytes of `spans` in order, the first chunk given, the window fetched ahead."""
        slots: dict[int, _Slot] = {}

        async def load(position: int) -> None:
            slot = slots[position]
            try:
                slot.data = await self.fetcher.get(recipe.chunks[spans[position].index])
            except Exception as exc:  # handed to the consumer, which raises it in order
                slot.error = exc
            finally:
                slot.done.set()

        async with trio.open_nursery() as nursery:

            def start(position: int) -> None:
                if position < len(spans) and position not in slots:
                    slot = slots[position] = _Slot()
                    if position == 0:
                        slot.data = head
                        slot.done.set()
                    else:
                        nursery.start_soon(load, position)

            for position in range(min(self.window, len(spans))):
                start(position)
            for position, (_, lo, hi) in enumerate(spans):
                start(position + self.window)
                slot = slots[position]
                await slot.done.wait()
                del slots[position]
                if slot.error is not None:
                    raise slot.error
                assert slot.data is not None
                data = slot.data
                yield data if (lo, hi) == (0, len(data)) else data[lo:hi]
