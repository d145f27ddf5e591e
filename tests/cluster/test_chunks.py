"""Blob bytes spread across real nodes: placed on R holders, pulled from anywhere."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import Cluster, push_blob

MiB = 1 << 20


def chunk_files(cluster: Cluster, node_id: str, area: str = "chunks") -> set[str]:
    return {p.name for p in (cluster.nodes[node_id].data / area).glob("??/*")}


def pull(url: str, repo: str, digest: str) -> bytes:
    response = httpx.get(f"{url}/v2/{repo}/blobs/{digest}", timeout=60)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response.content


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_100_mib_blob_lands_on_exactly_r_stores_and_pulls_from_every_node(
    cluster_factory,
) -> None:
    cluster = cluster_factory(3, "--chunk-size", str(MiB))
    data = os.urandom(100 * MiB)
    digest = push_blob(cluster.nodes["n1"].url, "big", data)
    copies: Counter[str] = Counter()
    for node_id in cluster.nodes:
        copies.update(chunk_files(cluster, node_id))
        assert chunk_files(cluster, node_id, "cache") == set(), "nothing pulled yet"
    assert len(copies) == 100
    assert set(copies.values()) == {2}, "every chunk on exactly R=2 nodes"

    for node_id in ("n2", "n3", "n1"):
        assert sha(pull(cluster.nodes[node_id].url, "big", digest)) == digest
    # A node keeps what it fetched in its cache; stores are unchanged.
    for node_id in cluster.nodes:
        cached = chunk_files(cluster, node_id, "cache")
        assert cached.isdisjoint(chunk_files(cluster, node_id))
        assert len(cached) == 100 - len(chunk_files(cluster, node_id))


def test_second_pull_through_a_node_is_served_from_its_cache(cluster_factory) -> None:
    cluster = cluster_factory(3, "--chunk-size", str(MiB))
    data = os.urandom(8 * MiB)
    digest = push_blob(cluster.nodes["n1"].url, "c", data)
    url = cluster.nodes["n2"].url
    assert pull(url, "c", digest) == data
    fetched = cluster.status("n2")["counters"].get("chunks_fetched", 0)
    assert pull(url, "c", digest) == data
    assert cluster.status("n2")["counters"].get("chunks_fetched", 0) == fetched


def test_five_nodes_survive_the_loss_of_any_one(cluster_factory) -> None:
    cluster = cluster_factory(5, "--chunk-size", str(MiB))
    blobs = {}
    for i, node_id in enumerate(cluster.nodes):
        data = os.urandom((3 + i) * MiB + i)
        blobs[push_blob(cluster.nodes[node_id].url, "five", data)] = data
    for node_id in cluster.nodes:
        for digest, data in blobs.items():
            assert pull(cluster.nodes[node_id].url, "five", digest) == data
    victim = "n3"
    cluster.nodes[victim].kill()
    for node_id in cluster.nodes:
        if node_id == victim:
            continue
        for digest, data in blobs.items():
            assert pull(cluster.nodes[node_id].url, "five", digest) == data


def test_push_while_an_owner_is_down_succeeds_and_pulls_after_it_returns(
    cluster_factory,
) -> None:
    cluster = cluster_factory(3, "--chunk-size", str(MiB))
    cluster.nodes["n2"].kill()
    data = os.urandom(20 * MiB)
    digest = push_blob(cluster.nodes["n1"].url, "hint", data)
    on_disk = Counter(c for n in ("n1", "n3") for c in chunk_files(cluster, n))
    assert len(on_disk) == 20 and set(on_disk.values()) == {2}, "hinted copies keep R=2"
    cluster.nodes["n2"].start()
    cluster.wait_for_leader()
    for node_id in ("n2", "n3", "n1"):
        assert pull(cluster.nodes[node_id].url, "hint", digest) == data


def test_a_corrupted_copy_is_skipped_logged_and_counted(cluster_factory) -> None:
    cluster = cluster_factory(3, "--chunk-size", str(MiB), "--replication", "3")
    data = os.urandom(4 * MiB)
    digest = push_blob(cluster.nodes["n1"].url, "rot", data)
    # Flip a byte in every chunk n2 holds: n2 must fetch good copies from n1/n3.
    for path in (cluster.nodes["n2"].data / "chunks").glob("??/*"):
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    assert pull(cluster.nodes["n2"].url, "rot", digest) == data
    counters = cluster.status("n2")["counters"]
    assert counters.get("chunk_corrupt", 0) == 4
    log = Path(cluster.nodes["n2"].log).read_text()
    assert "does not match its BLAKE3 id" in log
    # The damaged copies were repaired from the good holders.
    assert pull(cluster.nodes["n2"].url, "rot", digest) == data
    assert cluster.status("n2")["counters"].get("chunk_corrupt", 0) == 4


def test_a_holder_with_a_damaged_copy_is_skipped_for_a_good_one(cluster_factory) -> None:
    """n1 asks its same-zone peer n2 first; n2's copies are damaged, so the bytes
    must come from the other zone. n2 sends its copies as they are on disk (the
    data plane's sendfile); n1, the receiver, checks them and counts them on n2."""
    zones = {"n1": "z1", "n2": "z1", "n3": "z2", "n4": "z2"}
    cluster = cluster_factory(
        4, "--chunk-size", str(MiB), per_node={n: ["--zone", z] for n, z in zones.items()}
    )
    data = os.urandom(8 * MiB)
    digest = push_blob(cluster.nodes["n3"].url, "rot2", data)
    damaged = chunk_files(cluster, "n2") - chunk_files(cluster, "n1")
    assert damaged, "placement gave n2 some chunks n1 lacks"
    for cid in damaged:
        path = cluster.nodes["n2"].data / "chunks" / cid[:2] / cid
        raw = bytearray(path.read_bytes())
        raw[0] ^= 0x01
        path.write_bytes(bytes(raw))
    assert pull(cluster.nodes["n1"].url, "rot2", digest) == data
    status = cluster.status("n1")
    bad = status["counters"].get("peer_bad_chunks", 0)
    # Each damaged chunk is asked of n2 first; a hedge to the other zone that
    # answers before n2 does leaves that one uncounted.
    assert 1 <= bad <= len(damaged)
    assert next(p for p in status["peers"] if p["node_id"] == "n2")["bad_chunks"] == bad
    assert "sent wrong bytes" in Path(cluster.nodes["n1"].log).read_text()


def test_upload_session_follows_the_client_across_nodes(cluster_factory) -> None:
    cluster = cluster_factory(3, "--chunk-size", str(MiB))
    urls = [cluster.nodes[n].url for n in ("n1", "n2", "n3")]
    data = os.urandom(3 * MiB + 5)
    started = httpx.post(f"{urls[0]}/v2/lb/blobs/uploads/", timeout=30)
    assert started.status_code == 202
    location = started.headers["Location"]
    offset = 0
    for i, piece in enumerate([data[: 2 * MiB], data[2 * MiB :]]):
        patched = httpx.patch(
            f"{urls[(i + 1) % 3]}{location}", content=piece, timeout=30,
            headers={"Content-Range": f"{offset}-{offset + len(piece) - 1}",
                     "Content-Type": "application/octet-stream"},
        )
        assert patched.status_code == 202, patched.text
        offset += len(piece)
        assert patched.headers["Range"] == f"0-{offset - 1}"
    status = httpx.get(f"{urls[1]}{location}", timeout=30)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{len(data) - 1}"
    done = httpx.put(f"{urls[2]}{location}", params={"digest": sha(data)}, timeout=30)
    assert done.status_code == 201, done.text
    for url in urls:
        assert pull(url, "lb", sha(data)) == data


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/_cluster/status"), ("POST", "/_cluster/chunks/confirm"),
     ("POST", "/_cluster/chunks/drop"), ("GET", "/_cluster/health"),
     ("POST", "/_cluster/members")],
)
def test_internal_api_without_the_secret_is_401(cluster_factory, method: str, path: str) -> None:
    cluster = cluster_factory(1)
    url = cluster.nodes["n1"].url
    response = httpx.request(method, f"{url}{path}", content=b"x" * 10, timeout=10)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    forged = httpx.request(method, f"{url}{path}", timeout=10, headers={
        "X-Flotilla-Time": f"{time.time():.3f}", "X-Flotilla-Signature": "0" * 64})
    assert forged.status_code == 401


def test_concurrent_pulls_through_one_node_share_each_chunk_fetch(cluster_factory) -> None:
    """With no cache to hide it, six clients pulling at once through a node that lacks
    the chunks must not cost six fetches of each chunk from its holders."""
    cluster = cluster_factory(3, "--chunk-size", str(MiB), "--replication", "1",
                              "--cache-bytes", "0")
    data = os.urandom(16 * MiB)
    digest = push_blob(cluster.nodes["n1"].url, "share", data)
    reader = min(cluster.nodes, key=lambda n: len(chunk_files(cluster, n)))
    lacking = 16 - len(chunk_files(cluster, reader))
    assert lacking > 0
    url = cluster.nodes[reader].url
    start = threading.Barrier(6)
    results: list[bytes] = []

    def client() -> None:
        start.wait()
        results.append(pull(url, "share", digest))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [data] * 6
    fetched = cluster.status(reader)["counters"].get("chunks_fetched", 0)
    assert lacking <= fetched < 6 * lacking, (fetched, lacking)


def test_a_chunk_whose_holders_are_all_down_is_503_unavailable_not_a_500(
    cluster_factory,
) -> None:
    cluster = cluster_factory(5, "--chunk-size", str(MiB))
    data = os.urandom(MiB // 2)
    digest = push_blob(cluster.nodes["n1"].url, "gone", data)
    holders = [n for n in cluster.nodes if chunk_files(cluster, n)]
    assert len(holders) == 2
    for node_id in holders:
        cluster.nodes[node_id].kill()
    reader = next(n for n in cluster.nodes if n not in holders)
    response = httpx.get(f"{cluster.nodes[reader].url}/v2/gone/blobs/{digest}", timeout=60)
    assert response.status_code == 503, response.text[:300]
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
