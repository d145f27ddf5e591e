"""Chunks an abandoned upload placed on other nodes are dropped; shared ones stay."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import blake3
import httpx

from node.cluster.client import call_sync
from tests.cluster.conftest import Cluster, push_blob
from tests.cluster.test_upload_sessions import write_config

CHUNK = 64 * 1024


def cids(data: bytes) -> list[str]:
    """The ids of the chunks that fill up in `data` (a last partial one is left out)."""
    return [
        blake3.blake3(data[i : i + CHUNK]).hexdigest()
        for i in range(0, len(data) - CHUNK + 1, CHUNK)
    ]


def holders(cluster: Cluster, cid: str) -> set[str]:
    return {n for n, p in cluster.nodes.items() if (p.data / "chunks" / cid[:2] / cid).exists()}


def wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start_cluster(cluster_factory, tmp_path: Path, **settings: object) -> Cluster:
    config = write_config(tmp_path / "abandon.toml", **settings)
    return cluster_factory(3, "--config", str(config), "--chunk-size", str(CHUNK))


def patch_and_wait_for_copies(cluster: Cluster, node: str, repo: str, data: bytes) -> str:
    """A session on `node` fed `data`, once its full chunks reached their other holders."""
    url = cluster.nodes[node].url
    started = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=10)
    assert started.status_code == 202
    location = f"{url}{started.headers['Location']}"
    assert httpx.patch(location, content=data, timeout=30).status_code == 202
    wait_until(
        lambda: all(holders(cluster, cid) - {node} for cid in cids(data)),
        "every full chunk reached a holder besides the session's node",
    )
    return location


def test_a_cancelled_upload_leaves_no_chunk_behind_but_a_shared_one_stays(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path, abandoned_chunk_grace_seconds=1.0)
    committed = os.urandom(3 * CHUNK)
    committed_digest = push_blob(cluster.nodes["n2"].url, "kept", committed)
    # Starts with the committed blob's first chunk, then 9 chunks of its own.
    abandoned = committed[:CHUNK] + os.urandom(9 * CHUNK + 100)
    location = patch_and_wait_for_copies(cluster, "n1", "gone", abandoned)
    shared, *own = cids(abandoned)

    assert httpx.delete(location, timeout=10).status_code == 204
    wait_until(lambda: not any(holders(cluster, cid) for cid in own),
               "the cancelled upload's chunks were dropped from every holder")
    assert holders(cluster, shared), "the chunk a committed blob uses stays"
    for node in cluster.nodes.values():
        pulled = httpx.get(f"{node.url}/v2/kept/blobs/{committed_digest}", timeout=30)
        assert pulled.status_code == 200 and pulled.content == committed


def test_an_expired_upload_leaves_no_chunk_behind(cluster_factory, tmp_path: Path) -> None:
    cluster = start_cluster(
        cluster_factory, tmp_path, abandoned_chunk_grace_seconds=1.0, upload_idle_seconds=2.0
    )
    abandoned = os.urandom(6 * CHUNK)
    location = patch_and_wait_for_copies(cluster, "n3", "idle", abandoned)
    wait_until(lambda: not any(holders(cluster, cid) for cid in cids(abandoned)),
               "the expired upload's chunks were dropped from every holder")
    assert httpx.get(location, timeout=10).status_code == 404


def test_a_live_upload_whose_chunks_another_upload_dropped_sends_them_again_at_commit(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path, abandoned_chunk_grace_seconds=1.0)
    live = os.urandom(4 * CHUNK + 10)
    live_location = patch_and_wait_for_copies(cluster, "n1", "live", live)
    # The same bytes, plus some of its own, pushed through another node and cancelled:
    # its drop of the shared chunks comes after the live upload's last touch of them.
    other = live[: 4 * CHUNK] + os.urandom(2 * CHUNK)
    other_location = patch_and_wait_for_copies(cluster, "n2", "other", other)
    before = {cid: holders(cluster, cid) for cid in cids(live)}
    # The shared chunks were on their holders already, so the wait above says
    # nothing of this upload's own copies of them, each a touch that keeps a
    # chunk for the grace period: let those land before the cancel.
    time.sleep(1.0)
    assert httpx.delete(other_location, timeout=10).status_code == 204
    wait_until(lambda: not any(holders(cluster, cid) for cid in cids(other)[4:]),
               "the cancelled upload's own chunks were dropped")
    wait_until(lambda: any(holders(cluster, cid) < before[cid] for cid in before),
               "the drop took a copy of a chunk the live upload shares")

    closed = httpx.put(live_location, params={"digest": sha(live)}, timeout=30)
    assert closed.status_code == 201, closed.text
    assert cluster.status("n1")["counters"].get("chunks_sent_again", 0) >= 1
    for cid in cids(live):
        assert len(holders(cluster, cid)) == 2, "every chunk of the blob is on R holders"
    for node in cluster.nodes.values():
        pulled = httpx.get(f"{node.url}/v2/live/blobs/{sha(live)}", timeout=30)
        assert pulled.status_code == 200 and pulled.content == live


def test_a_holder_refuses_to_drop_a_chunk_put_within_the_grace_period(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path, abandoned_chunk_grace_seconds=300.0)
    data = os.urandom(1000)
    cid = blake3.blake3(data).hexdigest()
    holder = cluster.nodes["n2"]
    cluster.place_chunk("n2", cid, data)
    dropped = call_sync(cluster.secret, "POST", f"{holder.url}/_cluster/chunks/drop",
                        {"chunks": [cid]}, node_id="n2", timeout=10)
    assert dropped.status_code == 200, dropped.text
    assert dropped.json() == {"dropped": [], "kept": [cid]}
    assert holders(cluster, cid) == {"n2"}


def drop_answers(cluster: Cluster) -> int:
    counters = [cluster.status(n)["counters"] for n in cluster.nodes]
    return sum(c.get("abandoned_chunks_dropped", 0) + c.get("abandoned_chunks_kept", 0)
               for c in counters)


def test_a_chunk_another_push_places_while_a_drop_is_pending_is_kept_and_commits(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path, abandoned_chunk_grace_seconds=8.0)
    shared = os.urandom(3 * CHUNK)
    abandoned = shared + os.urandom(CHUNK)
    location = patch_and_wait_for_copies(cluster, "n2", "gone", abandoned)
    assert httpx.delete(location, timeout=10).status_code == 204
    # Within the grace period, another node's push places the same chunks again.
    live = shared + os.urandom(2 * CHUNK + 5)
    live_location = patch_and_wait_for_copies(cluster, "n1", "live", live)
    assert drop_answers(cluster) == 0, "precondition: the drop is still waiting out its grace"

    wait_until(lambda: drop_answers(cluster) > 0, "the cancelled upload's drop was answered")
    wait_until(lambda: not holders(cluster, cids(abandoned)[3]), "its own chunk was dropped")
    for cid in cids(shared):
        assert len(holders(cluster, cid) - {"n1"}) >= 1, "the shared chunks were kept"
    closed = httpx.put(live_location, params={"digest": sha(live)}, timeout=30)
    assert closed.status_code == 201, closed.text
    assert cluster.status("n1")["counters"].get("chunks_sent_again", 0) == 0
    for node in cluster.nodes.values():
        pulled = httpx.get(f"{node.url}/v2/live/blobs/{sha(live)}", timeout=30)
        assert pulled.status_code == 200 and pulled.content == live
