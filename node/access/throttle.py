"""Failed logins per client address: past `limit` in a `window`, further attempts from
that address are refused at once (429 with Retry-After) without checking anything, so a
password guesser can neither find a password nor make the node spend CPU on hashes.
Memory is bounded: at most `max_addresses` are tracked, the stalest forgotten first."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class LoginThrottle:
    def __init__(self, limit: int = 10, window: float = 60.0, max_addresses: int = 16_384,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_addresses, self.clock = (
            limit, window, max_addresses, clock
        )
        self._failures: OrderedDict[str, list[float]] = OrderedDict()  # address → times

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None if it may now."""
        times = self._recent(address)
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - self.clock()))

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(self.clock())
        del times[: -self.limit]
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def _recent(self, address: str) -> list[float]:
        cutoff = self.clock() - self.window
        times = [t for t in self._failures.get(address, ()) if t > cutoff]
        if not times:
            self._failures.pop(address, None)
        return times
