"""What a fuzz run saw: responses counted by channel and status, and the failures.

A failure keeps the case that caused it (its index and the run's seed), so
`scripts/fuzz --seed S --target T --replay I` sends the same requests again.
Only the first few failures keep their full description: a node that breaks
once usually breaks a thousand times the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

KEPT_FAILURES = 20


@dataclass
class Failure:
    target: str
    case: int
    case_name: str
    what: str  # the request, reproducibly
    why: str  # what was wrong with the answer


@dataclass
class Tally:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    requests: int = 0  # HTTP requests and raw HTTP connections
    frames: int = 0  # Raft frames and raw connections to a Raft port

    def count(self, channel: str, outcome: str | int) -> None:
        self.counts[(channel, str(outcome))] += 1

    def fail(self, failure: Failure) -> None:
        self.failure_count += 1
        if len(self.failures) < KEPT_FAILURES:
            self.failures.append(failure)

    def table(self) -> str:
        """Counts by channel and outcome, one line each, in a fixed order."""
        width = max([len(c) for c, _ in self.counts] + [7])
        lines = [f"{'channel':<{width}}  {'outcome':<28} {'count':>8}"]
        for (channel, outcome), n in sorted(self.counts.items()):
            lines.append(f"{channel:<{width}}  {outcome:<28} {n:>8}")
        lines.append(f"{'total':<{width}}  {'':<28} {sum(self.counts.values()):>8}")
        return "\n".join(lines)


def is_server_failure(status: int) -> bool:
    """A 5xx other than 503, which a node may answer under overload or without quorum."""
    return status >= 500 and status != 503
