"""`/healthz` and `/readyz` on real nodes: ready with a leader, caught up, on a writable disk."""

from __future__ import annotations

import shutil
import time

import httpx


def readiness(url: str) -> tuple[int, dict]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json()


def wait_for_ready(url: str, want: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, report = readiness(url)
        if status == want or time.monotonic() > deadline:
            assert status == want, report
            return report
        time.sleep(0.2)


def test_every_node_of_a_healthy_cluster_is_live_and_ready(cluster_factory) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    for node in cluster.nodes.values():
        assert httpx.get(f"{node.url}/healthz", timeout=5).status_code == 200
        report = wait_for_ready(node.url, 200)
        assert report["ready"] is True and report["failures"] == []
        assert report["leader"] == leader


def test_a_node_cut_off_from_its_quorum_is_live_but_not_ready_until_it_is_back(
    cluster_factory,
) -> None:
    cluster = cluster_factory(3)
    survivor = cluster.nodes["n1"]
    wait_for_ready(survivor.url, 200)
    cluster.nodes["n2"].kill()
    cluster.nodes["n3"].kill()
    report = wait_for_ready(survivor.url, 503, timeout=30)
    assert report["ready"] is False and report["failures"]
    assert httpx.get(f"{survivor.url}/healthz", timeout=5).status_code == 200
    cluster.nodes["n2"].start()
    cluster.nodes["n3"].start()
    for node in cluster.nodes.values():
        wait_for_ready(node.url, 200, timeout=30)


def test_a_node_whose_data_directory_takes_no_write_is_not_ready(cluster_factory) -> None:
    cluster = cluster_factory(3)
    node = cluster.nodes["n2"]
    wait_for_ready(node.url, 200)
    tmp = node.data / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"")  # a file where the node writes its probe: every write there fails
    try:
        report = wait_for_ready(node.url, 503)
        assert any("not writable" in failure for failure in report["failures"]), report
    finally:
        tmp.unlink()
        tmp.mkdir()
    wait_for_ready(node.url, 200)
