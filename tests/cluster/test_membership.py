"""Changing who is in the group: add, join, remove, catch up by snapshot."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import trio

from tests.cluster.conftest import Cluster, image_manifest, push_blob, put_manifest
from tests.conftest import ROOT


def flotilla_cluster(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", *args,
         "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def wait_for_tag(url: str, repo: str, tag: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v2/{repo}/manifests/{tag}", timeout=10).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"{tag} never appeared at {url}")


def test_node_added_with_the_cli_catches_up_and_removed_node_leaves(cluster_factory) -> None:
    cluster = cluster_factory(3)
    n1 = cluster.nodes["n1"].url
    config = b"{}"
    body = image_manifest(push_blob(n1, "m", config), len(config), [])
    assert put_manifest(n1, "m", "before", body).status_code == 201

    n4 = cluster.add_process("n4")
    # Waiting to be added, it must not form a group of its own, however long it waits.
    time.sleep(2.5)
    assert cluster.status("n4")["voters"] == [] and cluster.status("n4")["leader"] is None
    added = flotilla_cluster(cluster, "add", "--url", n1, "--node-id", "n4",
                             "--raft", n4.raft, "--http", n4.address)  # type: ignore[attr-defined]
    assert added.returncode == 0, added.stdout + added.stderr
    wait_for_tag(n4.url, "m", "before")
    assert put_manifest(n4.url, "m", "through-n4", body).status_code == 201
    wait_for_tag(cluster.nodes["n2"].url, "m", "through-n4")

    status = flotilla_cluster(cluster, "status", "--url", n4.url, "--json")
    assert status.returncode == 0, status.stderr
    assert '"n4"' in status.stdout

    removed = flotilla_cluster(cluster, "remove", "--url", n1, "--node-id", "n2")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    cluster.nodes["n2"].stop()
    assert sorted(cluster.status("n1")["voters"]) == ["n1", "n3", "n4"]
    # With n2 gone for good, the three remaining voters still commit.
    assert put_manifest(n1, "m", "after-remove", body).status_code == 201
    wait_for_tag(n4.url, "m", "after-remove")


def test_node_started_with_join_becomes_a_voter(cluster_factory) -> None:
    cluster = cluster_factory(3)
    n5 = cluster.add_process("n5", join_via=cluster.nodes["n2"].url)
    deadline = time.monotonic() + 30
    while "n5" not in cluster.status("n1")["voters"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "n5" in cluster.status("n1")["voters"]
    config = b"{}"
    body = image_manifest(push_blob(n5.url, "j", config), len(config), [])
    assert put_manifest(n5.url, "j", "x", body).status_code == 201
    wait_for_tag(cluster.nodes["n3"].url, "j", "x")


def test_leadership_moves_where_it_is_told(cluster_factory) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    target = next(n for n in cluster.nodes if n != leader)
    other = next(n for n in cluster.nodes if n not in (leader, target))
    moved = flotilla_cluster(cluster, "transfer-leader", "--url", cluster.nodes[other].url,
                             "--to", target)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert cluster.wait_for_leader() == target


async def _write_tags(url: str, repo: str, body: bytes, count: int) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def writer(start: int) -> None:
            for i in range(start, count, 64):
                response = await client.put(
                    f"/v2/{repo}/manifests/t{i}", content=body,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                )
                assert response.status_code == 201, response.text

        async with trio.open_nursery() as nursery:
            for start in range(64):
                nursery.start_soon(writer, start)


def test_node_added_after_many_entries_catches_up_by_snapshot(cluster_factory) -> None:
    # Snapshots every 1,000 entries here (10,000 by default): the same path, in a fifth
    # of the writes; the log a new node would replay is gone, so only a snapshot helps.
    cluster = cluster_factory(3, "--snapshot-every", "1000")
    leader = cluster.wait_for_leader()
    url = cluster.nodes[leader].url
    config = b"{}"
    body = image_manifest(push_blob(url, "snap", config), len(config), [])
    trio.run(_write_tags, url, "snap", body, 4_000)
    status = cluster.status(leader)
    assert status["snapshot_index"] >= 3_000, status

    n4 = cluster.add_process("n4")
    added = flotilla_cluster(cluster, "add", "--url", url, "--node-id", "n4",
                             "--raft", n4.raft, "--http", n4.address)  # type: ignore[attr-defined]
    assert added.returncode == 0, added.stdout + added.stderr
    wait_for_tag(n4.url, "snap", "t3999", timeout=60)
    wait_for_tag(n4.url, "snap", "t0")
    assert cluster.status("n4")["snapshot_index"] >= 3_000
    log = n4.log.read_text() if n4.log else ""
    assert "installed snapshot" in log
