"""What a node writes to its log, and the request id that ties a response to its lines.

Real `flotilla serve` processes, their output captured in a file: with
`--log-format json` every line is one JSON object, and every record written
while a request was handled carries that request's id, which the client
gets back in `X-Request-Id`.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NodeProcess, free_port

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def json_node(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(
        tmp_path / "node", free_port(),
        extra=["--log-format", "json", "--access-log", "--node-id", "n7"],
    ).start()
    yield node
    node.stop()


def records(node: NodeProcess, *, settle: float = 5.0, **wanted: Any) -> list[dict[str, Any]]:
    """Every line of the node's log as JSON (each must parse), once a line with all of
    `wanted` shows up or `settle` seconds passed (the log is written as it happens)."""
    assert node.log is not None
    deadline = time.monotonic() + settle
    while True:
        lines = [line for line in node.log.read_text().splitlines() if line]
        parsed = [json.loads(line) for line in lines]
        found = [r for r in parsed if all(r.get(k) == v for k, v in wanted.items())]
        if found or time.monotonic() > deadline:
            return parsed
        time.sleep(0.05)


def test_a_well_formed_request_id_comes_back_and_tags_the_access_line(
    json_node: NodeProcess,
) -> None:
    sent = "client-1234.abc:XYZ_9"
    response = httpx.get(f"{json_node.url}/v2/", headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] == sent
    lines = records(json_node, request_id=sent, logger="flotilla.access")
    access = [r for r in lines if r.get("request_id") == sent and r["logger"] == "flotilla.access"]
    assert len(access) == 1
    line = access[0]
    assert line["method"] == "GET" and line["path"] == "/v2/" and line["status"] == 200
    assert line["duration_seconds"] >= 0 and line["level"] == "info" and line["node"] == "n7"
    assert RFC3339_UTC.fullmatch(line["time"])


@pytest.mark.parametrize("sent", ["x" * 200, "two words", "", "semi;colon", "ümlaut"])
def test_a_malformed_request_id_is_replaced_by_a_fresh_one(
    json_node: NodeProcess, sent: str
) -> None:
    response = httpx.get(f"{json_node.url}/v2/", headers={"X-Request-Id": sent.encode()})
    given = response.headers["X-Request-Id"]
    assert given != sent and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", given)
    assert [r for r in records(json_node, request_id=given) if r.get("request_id") == given]


def test_a_request_id_with_a_newline_never_reaches_the_log(json_node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", json_node.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: ab\ncd\r\n"
                     b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 ")
    records(json_node, settle=1.0)  # every line still parses
    assert json_node.log is not None
    assert "ab\ncd" not in json_node.log.read_text()


def test_every_request_gets_an_id_and_two_requests_never_share_one(
    json_node: NodeProcess,
) -> None:
    ids = {httpx.get(f"{json_node.url}/healthz").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_a_warning_logged_inside_a_request_carries_its_id(json_node: NodeProcess) -> None:
    # An unsigned request to the peer API is refused with a warning in the log.
    response = httpx.get(f"{json_node.url}/_cluster/status", headers={"X-Request-Id": "probe-1"})
    assert response.status_code == 401
    assert response.headers["X-Request-Id"] == "probe-1"
    lines = records(json_node, request_id="probe-1", level="warning")
    warnings = [r for r in lines if r.get("request_id") == "probe-1" and r["level"] == "warning"]
    assert warnings and "refused" in warnings[0]["message"]
    assert warnings[0]["path"] == "/_cluster/status"


def test_the_access_line_has_the_path_but_never_the_query_string(json_node: NodeProcess) -> None:
    secret = "state-that-must-not-be-logged"
    response = httpx.get(f"{json_node.url}/v2/_catalog", params={"last": secret},
                         headers={"X-Request-Id": "query-1"})
    assert response.status_code == 200
    lines = records(json_node, request_id="query-1", logger="flotilla.access")
    assert [r["path"] for r in lines if r.get("request_id") == "query-1"] == ["/v2/_catalog"]
    assert json_node.log is not None
    assert secret not in json_node.log.read_text()


def test_without_access_log_a_default_node_logs_no_line_per_request(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", free_port()).start()
    try:
        assert node.log is not None
        before = node.log.read_text()
        for _ in range(20):
            httpx.get(f"{node.url}/v2/")
        httpx.get(f"{node.url}/v2/nobody/manifests/latest")
        time.sleep(0.5)
        assert node.log.read_text() == before
    finally:
        node.stop()


def test_text_lines_name_the_request_they_were_written_for(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", free_port(), extra=["--access-log"]).start()
    try:
        httpx.get(f"{node.url}/v2/", headers={"X-Request-Id": "text-7"})
        assert node.log is not None
        deadline = time.monotonic() + 5
        while "text-7" not in node.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(li for li in node.log.read_text().splitlines() if "text-7" in li)
        assert re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO flotilla\.access \[text-7\]: GET /v2/ 200 ",
                        line), line
    finally:
        node.stop()
