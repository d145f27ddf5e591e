"""Caps on connections and requests in flight: past them 503 and Retry-After; the node serves on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import Registry

MAX_CONNECTIONS = 4
OVERFLOW = 16  # connections past the cap that still get an answer (max(16, cap // 4))
MAX_REQUESTS = 2
MiB = 1 << 20


@pytest.fixture
async def registry(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Registry]:
    from node.app import serve
    from node.config import Config

    config = Config(
        data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024, tick_ms=2,
        max_connections=MAX_CONNECTIONS, max_inflight_requests=MAX_REQUESTS,
    )
    node = await nursery.start(serve, config)
    limits = httpx.Limits(max_connections=1)  # the test's own client holds one slot at most
    async with httpx.AsyncClient(base_url=node.url, timeout=30, limits=limits) as client:
        yield Registry(node, client, config.data)
    node.cancel_scope.cancel()


class RawConnection:
    """One HTTP/1.1 connection over a plain socket, so the test decides when it opens and closes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes] | None:
        """The answer to GET `path`; None when the node closed the connection instead."""
        try:
            await self.stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            while b"\r\n\r\n" not in self.buffer:
                if not (data := await self.stream.receive_some(65536)):
                    return None
                self.buffer += data
        except (trio.BrokenResourceError, ConnectionResetError):
            return None
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += await self.stream.receive_some(65536)
        self.buffer = bytearray(rest[length:])
        return int(lines[0].split()[1]), headers, rest[:length]

    async def aclose(self) -> None:
        await self.stream.aclose()


def assert_overloaded(answer: tuple[int, dict[str, str], bytes] | httpx.Response | None) -> None:
    assert answer is not None
    if isinstance(answer, httpx.Response):
        status, headers, body = answer.status_code, dict(answer.headers), answer.content
    else:
        status, headers, body = answer
    assert status == 503
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"


async def test_connections_past_the_cap_get_503_and_the_node_serves_once_they_close(
    registry: Registry,
) -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as held:
            first = []
            for _ in range(MAX_CONNECTIONS):
                connection = await RawConnection.open(registry.url)
                held.push_async_callback(connection.aclose)
                answer = await connection.get("/v2/team/app/tags/list")
                assert answer is not None and answer[0] == 404  # served
                first.append(connection)

            past_cap = await RawConnection.open(registry.url)
            held.push_async_callback(past_cap.aclose)
            refused = await past_cap.get("/v2/team/app/tags/list")
            assert_overloaded(refused)
            assert refused is not None and refused[1]["connection"] == "close"

            # The base check and the peer API are served past the cap.
            probe = await RawConnection.open(registry.url)
            held.push_async_callback(probe.aclose)
            health = await probe.get("/v2/")
            assert health is not None and health[0] == 200
            peer = await probe.get("/_cluster/health")
            assert peer is not None and peer[0] == 401  # answered (unsigned), not refused

        # All closed: a new connection is served again once the node has seen them go.
        while True:
            fresh = await RawConnection.open(registry.url)
            answer = await fresh.get("/v2/team/app/tags/list")
            await fresh.aclose()
            assert answer is not None
            if answer[0] != 503:
                break
            await trio.sleep(0.05)
        assert answer[0] == 404


async def test_connections_past_the_overflow_are_closed_at_once(registry: Registry) -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as held:
            for _ in range(MAX_CONNECTIONS + OVERFLOW):
                connection = await RawConnection.open(registry.url)
                held.push_async_callback(connection.aclose)
                answer = await connection.get("/v2/")
                assert answer is not None and answer[0] == 200
            extra = await RawConnection.open(registry.url)
            held.push_async_callback(extra.aclose)
            assert await extra.get("/v2/") is None
        response = await registry.client.get("/v2/")
        assert response.status_code == 200


async def test_requests_past_the_in_flight_cap_get_503_with_retry_after(
    registry: Registry,
) -> None:
    release = trio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        await release.wait()
        yield b"y" * 1000

    answers: list[httpx.Response] = []

    async def slow_patch(location: str) -> None:
        async with httpx.AsyncClient(base_url=registry.url, timeout=30) as own:
            answers.append(await own.patch(location, content=slow_body()))

    with trio.fail_after(30):
        locations = []
        for _ in range(MAX_REQUESTS):
            started = await registry.client.post("/v2/team/app/blobs/uploads/")
            locations.append(started.headers["Location"])
        writer = registry.node.services.blob_writer
        async with trio.open_nursery() as nursery:
            for location in locations:
                nursery.start_soon(slow_patch, location)
                # Watched from inside: a request to ask would itself take a slot.
                upload = writer.find("team/app", location.rsplit("/", 1)[1])
                while upload.size < MiB:
                    await trio.sleep(0.02)
            refused = await registry.client.get("/v2/team/app/tags/list")
            assert_overloaded(refused)
            assert (await registry.client.get("/v2/")).status_code == 200
            assert (await registry.client.get("/_cluster/health")).status_code == 401
            release.set()
        assert [a.status_code for a in answers] == [202] * MAX_REQUESTS
        while (after := await registry.client.get("/v2/team/app/tags/list")).status_code == 503:
            await trio.sleep(0.05)
        assert after.status_code == 404
