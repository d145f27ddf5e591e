"""The login throttle with its clock in the test's hands: past the limit an address
waits, for as long as Retry-After says, and only that address."""

from __future__ import annotations

from node.access.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_may_fail_up_to_the_limit_then_waits() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=10, window=60, clock=clock)
    for _ in range(10):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.retry_after("10.0.0.1") == 50  # the first failure leaves the window then
    assert throttle.retry_after("10.0.0.2") is None


def test_the_wait_ends_when_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60, clock=clock)
    for _ in range(3):
        throttle.failed("a")
    assert throttle.retry_after("a") == 60
    clock.now += 59.5
    assert throttle.retry_after("a") == 1  # never 0: a client would retry at once
    clock.now += 1
    assert throttle.retry_after("a") is None


def test_failures_spread_wider_than_the_window_never_throttle() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60, clock=clock)
    for _ in range(20):
        throttle.failed("a")
        clock.now += 31
        assert throttle.retry_after("a") is None


def test_memory_is_bounded_by_forgetting_the_stalest_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=1, window=60, max_addresses=3, clock=clock)
    for address in ("a", "b", "c", "d"):
        throttle.failed(address)
    assert throttle.retry_after("a") is None  # forgotten
    assert all(throttle.retry_after(address) == 60 for address in ("b", "c", "d"))
