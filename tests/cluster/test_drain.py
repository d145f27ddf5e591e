"""`flotilla cluster drain`: a node's chunks move to their new owners while it keeps
serving, no chunk ever has fewer than R copies, and the node then leaves the group.

Copies are counted on disk while the drain runs. A chunk moves destination
first, then the drained node deletes its copy; listing the drained node's
chunk folder before the others' can therefore only overcount a moving chunk
(seen on both ends), never undercount it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from node.cluster.client import call_sync
from node.storage.chunks import chunk_id
from tests.cluster.conftest import Cluster, push_blob
from tests.cluster.test_chunks import MiB, sha
from tests.cluster.test_upload_sessions import write_config
from tests.conftest import ROOT

R = 2
CHUNK = 512 * 1024  # small chunks: many of them move
BLOBS = 8
BLOB_BYTES = 12 * MiB + 123_457  # about 100 MiB in all, each blob ending in a short chunk


def drain_cli(cluster: Cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "drain", *args,
         "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )


def stored(cluster: Cluster, node_id: str) -> set[str]:
    return {p.name for p in (cluster.nodes[node_id].data / "chunks").glob("??/*")}


def chunk_ids(data: bytes) -> set[str]:
    return {chunk_id(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)}


def member_ids(cluster: Cluster, node_id: str) -> set[str]:
    return {m["node_id"] for m in cluster.status(node_id)["members"]}


class PullLoad:
    """Threads pulling random blobs through random nodes, checking every digest."""

    def __init__(self, urls: list[str], blobs: dict[str, bytes], threads: int = 3) -> None:
        self.urls = urls
        self.blobs = blobs
        self.stop = threading.Event()
        self.pulls = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                url = rng.choice(self.urls)
                digest = rng.choice(list(self.blobs))
                try:
                    response = client.get(f"{url}/v2/drain/blobs/{digest}")
                    if response.status_code != 200:
                        self.failures.append(f"{url} {digest}: {response.status_code}")
                    elif sha(response.content) != digest:
                        self.failures.append(f"{url} {digest}: wrong bytes")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url} {digest}: {exc!r}")
                self.pulls += 1

    def __enter__(self) -> PullLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


class CopySampler(threading.Thread):
    """Counts the copies of every chunk on disk, the drained node's folder first."""

    def __init__(self, cluster: Cluster, drained: str, others: list[str], chunks: set[str]):
        super().__init__()
        self.cluster, self.drained, self.others, self.chunks = cluster, drained, others, chunks
        self.stop = threading.Event()
        self.samples = 0
        self.fewest = R
        self.short: list[tuple[str, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            counted: Counter[str] = Counter(stored(self.cluster, self.drained))
            for node_id in self.others:
                counted.update(stored(self.cluster, node_id))
            self.samples += 1
            low = min(counted[cid] for cid in self.chunks)
            self.fewest = min(self.fewest, low)
            if low < R:
                self.short.extend((c, counted[c]) for c in self.chunks if counted[c] < R)
            time.sleep(0.1)


def test_drain_moves_every_chunk_off_the_node_while_it_serves_then_removes_it(
    cluster_factory, tmp_path: Path
) -> None:
    # A copy pushed within the grace period is never deleted; a short one lets the
    # drain begin right after the pushes.
    config = write_config(tmp_path / "drain.toml", abandoned_chunk_grace_seconds=2.0)
    cluster = cluster_factory(
        4, "--config", str(config), "--chunk-size", str(CHUNK), "--replication", str(R),
        "--repair-bytes-per-second", str(8 * MiB),
    )
    urls = {n: cluster.nodes[n].url for n in ("n1", "n2", "n3", "n4")}
    blobs: dict[str, bytes] = {}
    for i in range(BLOBS):
        data = os.urandom(BLOB_BYTES)
        blobs[push_blob(urls[f"n{i % 4 + 1}"], "drain", data)] = data
    all_chunks = set().union(*(chunk_ids(d) for d in blobs.values()))
    held_by_n2 = stored(cluster, "n2") & all_chunks
    assert len(held_by_n2) > len(all_chunks) // 4, "placement gave n2 its share"
    others = ["n1", "n3", "n4"]
    # n2 leads: before it asks to be removed it must hand leadership to another voter.
    moved = subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "transfer-leader", "--url", urls["n1"],
         "--to", "n2", "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert cluster.wait_for_leader() == "n2"

    with PullLoad(list(urls.values()), blobs) as load:
        sampler = CopySampler(cluster, "n2", others, all_chunks)
        sampler.start()
        started = time.monotonic()
        try:
            drained = drain_cli(cluster, "n2", "--url", urls["n1"], "--wait", "--timeout", "240")
        finally:
            sampler.stop.set()
            sampler.join()
        seconds = time.monotonic() - started
    print(f"\ndrain of n2: {len(held_by_n2)} chunks ({len(held_by_n2) * CHUNK / MiB:.0f} MiB) "
          f"moved in {seconds:.1f} s; {load.pulls} pulls meanwhile; "
          f"{sampler.samples} copy samples, fewest copies seen {sampler.fewest}")
    print(drained.stdout[-2000:])

    assert drained.returncode == 0, drained.stdout[-3000:] + drained.stderr[-3000:]
    assert "drained and removed" in drained.stdout
    assert load.failures == [], load.failures[:10]
    assert load.pulls > 0
    assert sampler.samples > 0
    assert sampler.short == [], sampler.short[:10]
    for node_id in others:
        assert member_ids(cluster, node_id) == set(others)
        assert "n2" not in cluster.status(node_id)["voters"]
    assert not stored(cluster, "n2") & all_chunks, "n2 kept copies of chunks after its drain"
    assert cluster.wait_for_leader(among=others) != "n2"
    log = (cluster.nodes["n2"].data.parent / "n2.log").read_text()
    for line in ("drain of n2 started", "drain of n2: the node is empty",
                 "drain of n2 finished: removed from the group"):
        assert line in log
    for node_id in others:
        for digest, data in blobs.items():
            response = httpx.get(f"{urls[node_id]}/v2/drain/blobs/{digest}", timeout=60)
            assert response.status_code == 200 and response.content == data, (node_id, digest)
    counted: Counter[str] = Counter()
    for node_id in others:
        counted.update(stored(cluster, node_id))
    assert min(counted[c] for c in all_chunks) >= R


def test_a_drain_that_would_leave_fewer_than_r_members_is_refused_and_changes_nothing(
    cluster_factory,
) -> None:
    cluster = cluster_factory(2, "--replication", "2")
    url = cluster.nodes["n1"].url
    refused = drain_cli(cluster, "n2", "--url", url, "--wait")
    assert refused.returncode != 0
    assert "would leave 1 member to hold the 2 copies" in refused.stderr, refused.stderr
    answer = call_sync(cluster.secret, "POST", f"{url}/_cluster/members/n2/drain")
    assert answer.status_code == 409, answer.text
    assert answer.json()["errors"][0]["code"] == "MEMBERSHIP_CONFLICT"
    for node_id in ("n1", "n2"):
        members = cluster.status(node_id)["members"]
        assert {m["node_id"] for m in members} == {"n1", "n2"}
        assert not any(m.get("draining") for m in members)
    response = httpx.post(f"{url}/_cluster/members/n2/drain", timeout=10)
    assert response.status_code == 401, "the drain endpoint is signed like the others"
    unknown = drain_cli(cluster, "n9", "--url", url)
    assert unknown.returncode != 0 and "n9 is not a member" in unknown.stderr
    cancelled = drain_cli(cluster, "n2", "--url", url, "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr


def test_pushes_during_a_drain_place_nothing_on_the_draining_node_and_cancel_ends_it(
    cluster_factory,
) -> None:
    # The default grace period keeps n2's freshly pushed copies, so it stays draining.
    cluster = cluster_factory(4, "--chunk-size", str(CHUNK), "--replication", str(R))
    urls = {n: cluster.nodes[n].url for n in ("n1", "n2", "n3", "n4")}
    before = os.urandom(4 * MiB)
    push_blob(urls["n1"], "drain", before)
    assert stored(cluster, "n2") & chunk_ids(before), "n2 holds copies to drain"
    started = drain_cli(cluster, "n2", "--url", urls["n3"])
    assert started.returncode == 0, started.stderr
    for node_id in urls:
        assert next(m for m in cluster.status(node_id)["members"]
                    if m["node_id"] == "n2")["draining"] is True
    shown = subprocess.run(
        [sys.executable, "-m", "node.cli", "cluster", "status", "--url", urls["n1"],
         "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert "DRAINING" in next(line for line in shown.stdout.splitlines()
                              if line.startswith("n2 "))
    pushed = {}
    for via in ("n2", "n1", "n4"):  # the draining node itself takes pushes too
        data = os.urandom(3 * MiB + 1)
        pushed[push_blob(urls[via], "drain", data)] = data
    new_chunks = set().union(*(chunk_ids(d) for d in pushed.values()))
    assert not stored(cluster, "n2") & new_chunks, "a push placed chunks on the draining node"
    counted: Counter[str] = Counter()
    for node_id in ("n1", "n3", "n4"):
        counted.update(stored(cluster, node_id))
    assert min(counted[c] for c in new_chunks) >= R
    for digest, data in pushed.items():
        assert httpx.get(f"{urls['n2']}/v2/drain/blobs/{digest}", timeout=60).content == data

    cancelled = drain_cli(cluster, "n2", "--url", urls["n1"], "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    for node_id in urls:
        members = cluster.status(node_id)["members"]
        assert {m["node_id"] for m in members} == set(urls)
        assert not any(m["draining"] for m in members)


def test_drain_wait_gives_up_on_its_timeout_and_when_the_node_becomes_unreachable(
    cluster_factory,
) -> None:
    # The default grace period keeps n3's freshly pushed copies: its drain cannot finish.
    cluster = cluster_factory(3, "--chunk-size", str(CHUNK), "--replication", str(R))
    url = cluster.nodes["n1"].url
    data = os.urandom(8 * MiB)  # 16 chunks: all of them missing n3 has odds (1/3)**16
    push_blob(url, "drain", data)
    assert stored(cluster, "n3") & chunk_ids(data), "n3 holds nothing its drain must move"
    timed_out = drain_cli(cluster, "n3", "--url", url, "--wait", "--timeout", "3")
    assert timed_out.returncode == 1
    assert "timed out waiting for the drain of n3" in timed_out.stdout
    waiting = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "cluster", "drain", "n3", "--url", url, "--wait",
         "--secret-file", str(cluster.secret_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    time.sleep(2)
    cluster.nodes["n3"].kill()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 1, out + err
    assert "n3 became unreachable before its drain finished" in out
