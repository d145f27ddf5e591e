"""Three real nodes: metadata written anywhere is visible everywhere, and survives failures."""

from __future__ import annotations

import hashlib
import threading
import time

import httpx

from tests.cluster.conftest import Cluster, image_manifest, push_blob, put_manifest


def seed_image(cluster: Cluster, via: str, repo: str) -> bytes:
    """A config blob and a manifest naming it, pushed through node `via`."""
    url = cluster.nodes[via].url
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = push_blob(url, repo, config)
    return image_manifest(digest, len(config), [])


def test_manifest_pushed_to_one_node_is_served_by_every_node_at_once(cluster_factory) -> None:
    cluster = cluster_factory(3)
    body = seed_image(cluster, "n1", "team/app")
    response = put_manifest(cluster.nodes["n1"].url, "team/app", "1.0", body)
    assert response.status_code == 201, response.text
    digest = response.headers["Docker-Content-Digest"]
    for node_id in ("n3", "n2"):
        url = cluster.nodes[node_id].url
        got = httpx.get(f"{url}/v2/team/app/manifests/1.0", timeout=10)
        assert got.status_code == 200, (node_id, got.text)
        assert got.content == body
        assert got.headers["Docker-Content-Digest"] == digest
        tags = httpx.get(f"{url}/v2/team/app/tags/list", timeout=10).json()
        assert tags["tags"] == ["1.0"]


def test_write_through_a_follower_is_committed_and_visible_on_the_leader(cluster_factory) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n != leader)
    body = seed_image(cluster, follower, "r")
    assert put_manifest(cluster.nodes[follower].url, "r", "v1", body).status_code == 201
    got = httpx.get(f"{cluster.nodes[leader].url}/v2/r/manifests/v1", timeout=10)
    assert got.status_code == 200 and got.content == body


def _tag_writer(url: str, body: bytes, stop: threading.Event, acked: list[str],
                failed: list[tuple[float, str]]) -> None:
    i = 0
    while not stop.is_set():
        tag = f"t{i:05d}"
        i += 1
        try:
            response = put_manifest(url, "stream", tag, body, timeout=10)
            if response.status_code == 201:
                acked.append(tag)
            else:
                failed.append((time.monotonic(), f"{response.status_code}"))
        except httpx.HTTPError as exc:
            failed.append((time.monotonic(), repr(exc)))


def test_killing_the_leader_loses_no_acknowledged_write(cluster_factory) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    writers = [n for n in cluster.nodes if n != leader]
    body = seed_image(cluster, writers[0], "stream")
    stop = threading.Event()
    acked: list[str] = []
    failed: list[tuple[float, str]] = []
    threads = [
        threading.Thread(target=_tag_writer,
                         args=(cluster.nodes[w].url, body, stop, acked, failed))
        for w in writers
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    before_kill = len(acked)
    assert before_kill > 0
    killed_at = time.monotonic()
    cluster.nodes[leader].kill()
    cluster.wait_for_leader(among=writers, not_=leader)
    elected_after = time.monotonic() - killed_at
    # Writes resume: more are acknowledged after the kill.
    deadline = time.monotonic() + 15
    while len(acked) <= before_kill + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    resumed_after = time.monotonic() - killed_at
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > before_kill + 1, f"writes did not resume ({resumed_after:.1f}s)"
    print(f"new leader after {elected_after:.2f}s, writes resumed after {resumed_after:.2f}s")
    # Every acknowledged tag is on every survivor.
    for node_id in writers:
        url = cluster.nodes[node_id].url
        tags = httpx.get(f"{url}/v2/stream/tags/list", params={"n": 10000}, timeout=10)
        missing = set(acked) - set(tags.json()["tags"])
        assert not missing, f"{node_id} lost acknowledged tags {sorted(missing)[:5]}"

    # The killed node comes back, catches up, and serves tags written while it was down.
    cluster.nodes[leader].start()
    url = cluster.nodes[leader].url
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tags = httpx.get(f"{url}/v2/stream/tags/list", params={"n": 10000}, timeout=10)
        if tags.status_code == 200 and set(acked) <= set(tags.json()["tags"]):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("restarted node did not catch up")


def test_without_a_quorum_writes_fail_with_503_and_reads_still_work(cluster_factory) -> None:
    cluster = cluster_factory(3, "--propose-timeout", "2")
    body = seed_image(cluster, "n1", "q")
    assert put_manifest(cluster.nodes["n1"].url, "q", "before", body).status_code == 201
    cluster.wait_for_leader()
    survivor = "n3"
    # Wait until the survivor has applied the write, then take its quorum away.
    url = cluster.nodes[survivor].url
    assert httpx.get(f"{url}/v2/q/manifests/before", timeout=10).status_code == 200
    cluster.nodes["n1"].kill()
    cluster.nodes["n2"].kill()
    started = time.monotonic()
    response = put_manifest(url, "q", "after", body, timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert elapsed < 15, f"the refusal took {elapsed:.1f}s"
    got = httpx.get(f"{url}/v2/q/manifests/before", timeout=10)
    assert got.status_code == 200 and got.content == body
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert httpx.head(f"{url}/v2/q/manifests/{digest}", timeout=10).status_code == 200


def test_linearizable_node_cut_off_from_quorum_refuses_reads_it_cannot_vouch_for(
    cluster_factory,
) -> None:
    """With `consistency = "linearizable"` a node answers a metadata read only after
    the leader confirmed it is current; alone, it says 503 instead of maybe-stale data
    (the default, local reads, keeps serving: see the no-quorum test above)."""
    cluster = cluster_factory(3, "--consistency", "linearizable", "--propose-timeout", "2")
    body = seed_image(cluster, "n1", "lin")
    assert put_manifest(cluster.nodes["n1"].url, "lin", "v1", body).status_code == 201
    url = cluster.nodes["n3"].url
    got = httpx.get(f"{url}/v2/lin/manifests/v1", timeout=10)
    assert got.status_code == 200 and got.content == body
    cluster.nodes["n1"].kill()
    cluster.nodes["n2"].kill()
    refused = httpx.get(f"{url}/v2/lin/manifests/v1", timeout=30)
    assert refused.status_code == 503
    assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
