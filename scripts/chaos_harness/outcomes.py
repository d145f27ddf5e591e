"""What an answer means for the history: acknowledged, refused, or not known.

Pure. A write (tag PUT or DELETE, blob push) that got a 2xx happened; a 4xx
is a refusal that changed nothing (408 aside: the server gave up reading the
body, and with chunked uploads a part may already have landed); a 408, any
5xx — a 503 from the propose path may come after the entry was appended and
later committed — a timeout or a reset connection may or may not have taken
effect. A read's 200 is a value, its 404 is the value None (absent); any
other answer carries no value, so the checker drops it either way.
"""

from __future__ import annotations

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


def write_outcome(status: int | None, sent: bool = True) -> str:
    """`status` None: no answer (timeout, reset). `sent` False: the connection was never
    made, so the node never saw the request."""
    if not sent:
        return FAIL
    if status is None or status == 408 or status >= 500:
        return UNKNOWN
    if 200 <= status < 300:
        return OK
    return FAIL


def read_outcome(status: int | None) -> str:
    if status in (200, 404):
        return OK
    if status is None or status >= 500:
        return UNKNOWN
    return FAIL
