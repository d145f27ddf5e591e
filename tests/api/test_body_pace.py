"""A request body must keep moving: a trickle is cut off with 408, a pause is not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from node.app import serve
from node.config import Config
from tests.api.content import digest_of, random_bytes
from tests.conftest import Registry

NAME = "team/slow"
TIMEOUT = 2.0  # the node's body_read_timeout in these tests


@pytest.fixture
async def registry(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Registry]:
    config = Config(
        data=tmp_path / "node", listen="127.0.0.1:0", chunk_size=64 * 1024, tick_ms=2,
        body_read_timeout=TIMEOUT, body_min_rate=64,
    )
    node = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        yield Registry(node, client, config.data)
    node.cancel_scope.cancel()


async def raw_exchange(url: str, head: bytes, body_pieces: AsyncIterator[bytes]) -> bytes:
    """Send a request over a raw socket as the pieces come, and return what the node answered."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    answer = bytearray()
    async with stream:
        await stream.send_all(head)

        async def send_body() -> None:
            try:
                async for piece in body_pieces:
                    await stream.send_all(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_body)
            while chunk := await stream.receive_some(65536):
                answer += chunk
            nursery.cancel_scope.cancel()
    return bytes(answer)


def status_and_body(answer: bytes) -> tuple[int, bytes, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    return int(lines[0].split()[1]), body, head.decode("latin1").lower()


async def test_a_patch_trickling_one_byte_a_second_is_cut_off_and_the_session_goes_on(
    registry: Registry,
) -> None:
    data = random_bytes(200_000, seed=3)
    started = await registry.client.post(f"/v2/{NAME}/blobs/uploads/")
    location = started.headers["Location"]

    async def trickle() -> AsyncIterator[bytes]:
        for i in range(60):  # a minute of it, if nothing cut it off
            yield f"{1:x}\r\n".encode() + data[i : i + 1] + b"\r\n"
            await trio.sleep(1)

    head = (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    with trio.fail_after(30):  # a hang guard; the trickle would take 60 s
        answer = await raw_exchange(registry.url, head, trickle())
    status, body, headers = status_and_body(answer)
    assert status == 408
    assert json.loads(body)["errors"][0]["code"] == "REQUEST_TIMEOUT"
    assert "connection: close" in headers

    # The session is not left busy: the client asks where it stands and goes on from there.
    status_now = await registry.client.get(location)
    assert status_now.status_code == 204
    # "0-0" means nothing yet here: a trickle of a few bytes never fills a write batch.
    end = int(status_now.headers["Range"].split("-")[1])
    offset = end + 1 if end else 0
    patched = await registry.client.patch(location, content=data[offset:])
    assert patched.status_code == 202
    digest = digest_of(data)
    closed = await registry.client.put(location, params={"digest": digest})
    assert closed.status_code == 201
    pulled = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert pulled.content == data


async def test_an_upload_that_pauses_for_less_than_the_timeout_completes(
    registry: Registry,
) -> None:
    data = random_bytes(300_000, seed=4)

    async def paused() -> AsyncIterator[bytes]:
        yield data[:100_000]
        await trio.sleep(TIMEOUT / 2)
        yield data[100_000:200_000]
        await trio.sleep(TIMEOUT / 2)
        yield data[200_000:]

    digest = digest_of(data)
    pushed = await registry.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"digest": digest}, content=paused()
    )
    assert pushed.status_code == 201
    pulled = await registry.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert pulled.content == data


async def test_a_body_that_stops_is_cut_off_after_the_read_timeout(registry: Registry) -> None:
    started = await registry.client.post(f"/v2/{NAME}/blobs/uploads/")
    location = started.headers["Location"]

    async def stops() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await trio.sleep(60)

    head = (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").encode()
    with trio.fail_after(30):
        answer = await raw_exchange(registry.url, head, stops())
    status, body, _ = status_and_body(answer)
    assert status == 408
    assert json.loads(body)["errors"][0]["code"] == "REQUEST_TIMEOUT"
    assert (await registry.client.get("/v2/")).status_code == 200
