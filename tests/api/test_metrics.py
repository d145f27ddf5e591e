"""`GET /metrics`: what a Prometheus scrape of one node shows after real traffic."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from node.app import serve
from node.config import Config
from tests.api.content import digest_of, push_blob, random_bytes
from tests.conftest import Registry

NAME = "team/app"
Samples = dict[str, list[tuple[dict[str, str], float]]]
BLOB = random_bytes(200 * 1024, seed=11)  # four chunks of the fixture's 64 KiB


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample of the node's metrics: sample name → [(labels, value)]."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items())
    )


async def test_metrics_after_a_push_and_a_pull_show_requests_bytes_raft_and_chunks(
    registry: Registry,
) -> None:
    client = registry.client
    digest = await push_blob(client, NAME, BLOB)
    # A chunked upload too, so a session is opened and closed again.
    other = random_bytes(100 * 1024, seed=12)
    started = await client.post(f"/v2/{NAME}/blobs/uploads/")
    assert started.status_code == 202
    patched = await client.patch(started.headers["Location"], content=other)
    assert patched.status_code == 202
    finished = await client.put(patched.headers["Location"], params={"digest": digest_of(other)})
    assert finished.status_code == 201
    pulled = await client.get(f"/v2/{NAME}/blobs/{digest}")
    assert pulled.content == BLOB
    assert (await client.get(f"/v2/{NAME}/blobs/{digest_of(b'nothing')}")).status_code == 404

    samples = await scrape(client)
    blob_route = "/v2/{name}/blobs/{digest}"
    uploads_route = "/v2/{name}/blobs/uploads"
    assert value(samples, "flotilla_http_requests_total", route=uploads_route, method="POST",
                 status="201") == 1
    assert value(samples, "flotilla_http_requests_total", route=uploads_route, method="POST",
                 status="202") == 1
    assert value(samples, "flotilla_http_requests_total",
                 route="/v2/{name}/blobs/uploads/{session_id}", method="PUT", status="201") == 1
    assert value(samples, "flotilla_http_requests_total", route=blob_route, method="GET",
                 status="200") == 1
    assert value(samples, "flotilla_http_requests_total", route=blob_route, method="GET",
                 status="404") == 1
    assert value(samples, "flotilla_http_request_duration_seconds_count", route=blob_route,
                 method="GET") == 2
    assert value(samples, "flotilla_http_request_body_bytes_total",
                 route=uploads_route) >= len(BLOB)
    assert value(samples, "flotilla_http_response_body_bytes_total",
                 route=blob_route) >= len(BLOB)

    assert value(samples, "flotilla_raft_commit_index") > 0
    assert value(samples, "flotilla_raft_applied_index") > 0
    assert value(samples, "flotilla_raft_is_leader") == 1
    assert value(samples, "flotilla_raft_leader", leader="n1") == 1
    assert value(samples, "flotilla_raft_proposals_total", outcome="committed") >= 2
    assert value(samples, "flotilla_raft_proposal_duration_seconds_count") >= 2
    fsyncs = value(samples, "flotilla_raft_wal_fsync_duration_seconds_count")
    assert fsyncs > 0
    buckets = [v for _, v in samples["flotilla_raft_wal_fsync_duration_seconds_bucket"]]
    assert buckets == sorted(buckets) and buckets[-1] == fsyncs  # cumulative, +Inf last
    assert value(samples, "flotilla_raft_wal_fsync_duration_seconds_bucket", le="+Inf") == fsyncs
    assert value(samples, "flotilla_chunks_stored") >= 6
    assert value(samples, "flotilla_chunks_stored_bytes") >= len(BLOB) + len(other)
    assert value(samples, "flotilla_chunk_cache_hits_total") >= 4
    assert value(samples, "flotilla_upload_sessions_open") == 0


async def test_a_random_repository_name_never_becomes_a_metric_label(registry: Registry) -> None:
    name = f"secret-{secrets.token_hex(8)}"
    for path in (f"/v2/{name}/blobs/{digest_of(b'x')}", f"/v2/{name}/manifests/latest",
                 f"/v2/{name}/nowhere", f"/{name}", f"/_cluster/{name}"):
        await registry.client.get(path)
    response = await registry.client.get("/metrics")
    assert name not in response.text
    samples = await scrape(registry.client)
    assert value(samples, "flotilla_http_requests_total", route="/v2/{name}/manifests/{reference}",
                 status="404") == 1
    assert value(samples, "flotilla_http_requests_total", route="/v2/{unknown}") == 1


async def test_two_nodes_in_one_process_each_count_only_their_own_requests(
    registry: Registry, tmp_path: Path, nursery: trio.Nursery
) -> None:
    # One registry per node, not the library's global one (a second node in the
    # process would collide with the first, or count its requests).
    config = Config(data=tmp_path / "second", listen="127.0.0.1:0", chunk_size=64 * 1024,
                    tick_ms=2)
    second = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as other:
        for _ in range(3):
            assert (await other.get("/v2/")).status_code == 200
        await registry.client.get("/v2/")
        mine, theirs = await scrape(registry.client), await scrape(other)
    second.cancel_scope.cancel()
    assert value(mine, "flotilla_http_requests_total", route="/v2/") == 1
    assert value(theirs, "flotilla_http_requests_total", route="/v2/") == 3


async def test_metrics_answer_while_client_requests_are_refused_at_the_cap(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = Config(data=tmp_path / "capped", listen="127.0.0.1:0", chunk_size=64 * 1024,
                    tick_ms=2, max_inflight_requests=1)
    node = await nursery.start(serve, config)
    release = trio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x" * (1 << 20)
        await release.wait()

    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as client, \
                httpx.AsyncClient(base_url=node.url, timeout=30) as holder:
            location = (await client.post(f"/v2/{NAME}/blobs/uploads/")).headers["Location"]
            async with trio.open_nursery() as requests:
                requests.start_soon(partial(holder.patch, location, content=slow_body()))
                # Watched from inside: a request to ask would itself need the slot.
                upload = node.services.blob_writer.find(NAME, location.rsplit("/", 1)[1])
                while upload.size < 1 << 20:
                    await trio.sleep(0.02)
                assert (await client.get(f"/v2/{NAME}/tags/list")).status_code == 503
                samples = await scrape(client)
                release.set()
    node.cancel_scope.cancel()
    assert value(samples, "flotilla_http_requests_total", route="/v2/{name}/tags/list",
                 status="503") == 1
    assert value(samples, "flotilla_upload_sessions_open") == 1


async def test_snapshots_taken_show_in_the_count_and_the_snapshot_index(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = Config(data=tmp_path / "snapshots", listen="127.0.0.1:0", chunk_size=64 * 1024,
                    tick_ms=2, snapshot_every=2)
    node = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        for seed in range(4):
            await push_blob(client, NAME, random_bytes(1000, seed=seed))
        with trio.fail_after(20):
            while value(after := await scrape(client), "flotilla_raft_snapshots_taken_total") < 1:
                await trio.sleep(0.05)
    node.cancel_scope.cancel()
    assert 0 < value(after, "flotilla_raft_snapshot_index") <= value(
        after, "flotilla_raft_applied_index"
    )
