"""What a client can make a node write into its log.

A real `flotilla serve` process, its stdout and stderr captured in one file:
anything an unauthenticated client sends that ends up in a log record must
not be able to start a line of its own (a forged record), and a client that
sends refused requests in a loop must not be able to fill the disk with
warnings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NodeProcess, free_port

# Every record starts with the time `flotilla serve` stamps on it.
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
REFUSED_REQUESTS = 200


@pytest.fixture
def node_with_access_log(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "node", free_port(), extra=["--access-log"]).start()
    yield node
    node.stop()


def _log_lines(node: NodeProcess) -> list[str]:
    assert node.log is not None
    # newline="" keeps a lone carriage return visible instead of reading it as a line end.
    with open(node.log, encoding="utf-8", errors="replace", newline="") as f:
        return re.split(r"\r\n|\r|\n", f.read())


def test_a_crlf_in_an_unsigned_request_path_cannot_forge_a_log_line(
    node_with_access_log: NodeProcess,
) -> None:
    node = node_with_access_log
    with httpx.Client(base_url=node.url, timeout=10) as client:
        for target in ("/_cluster/status%0d%0aFAKE%20LINE", "/_cluster/status%0aFAKE%20LINE",
                       "/_cluster/status%0dFAKE%20LINE", "/v2/team%0d%0aFAKE%20LINE/tags/list"):
            response = client.get(target)
            assert 400 <= response.status_code < 500
        assert client.get("/v2/").status_code == 200
    node.stop()
    lines = [line for line in _log_lines(node) if line]
    assert not [line for line in lines if line.startswith("FAKE LINE")]
    assert all(RECORD_START.match(line) for line in lines), [
        line for line in lines if not RECORD_START.match(line)
    ][:5]
    assert any("FAKE LINE" in line for line in lines)  # logged, escaped, on its record's line


def test_a_flood_of_refused_requests_writes_a_bounded_number_of_warnings(
    node_process: NodeProcess,
) -> None:
    with httpx.Client(base_url=node_process.url, timeout=10) as client:
        for _ in range(REFUSED_REQUESTS):
            assert client.get("/_cluster/status").status_code == 401
    node_process.stop()
    lines = _log_lines(node_process)
    refused = [line for line in lines if "refused GET /_cluster/status" in line]
    assert 1 <= len(refused) <= 20, len(refused)


def test_warnings_dropped_by_the_repeat_limit_are_counted_once_the_interval_is_over() -> None:
    from node.cli import RepeatLimit

    now = [0.0]
    limit = RepeatLimit(burst=2, interval=60.0, clock=lambda: now[0])
    logger = logging.getLogger("flotilla.test.repeat")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    handler.addFilter(limit)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(5):
            logger.warning("refused %s", n)
        now[0] = 61.0
        logger.warning("refused %s", 5)
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "refused 0", "refused 1",
        "suppressed 3 similar messages ('refused %s') in the last 60 s", "refused 5",
    ]
