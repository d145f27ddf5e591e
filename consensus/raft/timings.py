"""A bucketed record of how long something took, in plain numbers.

The write-ahead log times its fsyncs and the engine its proposals with one
of these; `node/metrics.py` reads them at scrape time and exports them as
Prometheus histograms. Consensus stays free of any metrics library: this is
a list of counts, cheap enough to update on every fsync, and safe to read
from another thread (a reader may see one observation half-counted, which
a scrape a few seconds later corrects).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds. Spans a tmpfs fsync (tens of microseconds) to a stalled disk or a
# proposal waiting out an election (seconds).
DEFAULT_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)


@dataclass
class Timings:
    """Counts of durations at or below each bound (not cumulative), the
    count above the last bound, and their sum."""

    bounds: tuple[float, ...] = DEFAULT_BOUNDS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, durations at or below it) for every bound, then +inf."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
