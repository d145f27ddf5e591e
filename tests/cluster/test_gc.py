"""Garbage collection on a 3-node cluster: the bytes go from every holder and cache, what
a manifest needs stays, and a node killed in the middle of its sweep finishes it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import blake3
import httpx

from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from tests.cluster.conftest import Cluster, image_manifest, push_blob, put_manifest
from tests.cluster.test_upload_sessions import write_config
from tests.conftest import ROOT, NodeProcess, free_port

CHUNK = 64 * 1024
ITERATIONS = 24  # per pusher, each racing the collections that run meanwhile


def cids(data: bytes) -> list[str]:
    return [blake3.blake3(data[i : i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]


def copies(cluster: Cluster, cid: str) -> set[str]:
    """Where the chunk is on disk, stored or cached: `n1`, `n1:cache` …"""
    found = set()
    for node_id, node in cluster.nodes.items():
        if (node.data / "chunks" / cid[:2] / cid).exists():
            found.add(node_id)
        if (node.data / "cache" / cid[:2] / cid).exists():
            found.add(f"{node_id}:cache")
    return found


def chunk_bytes_on_disk(cluster: Cluster, node_id: str) -> int:
    data = cluster.nodes[node_id].data
    return sum(p.stat().st_size for folder in ("chunks", "cache")
               for p in (data / folder).glob("??/*"))


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def start_cluster(cluster_factory, tmp_path: Path, **settings: object) -> Cluster:
    config = write_config(tmp_path / "gc.toml", abandoned_chunk_grace_seconds=1.0,
                          gc_interval=0.0, **settings)
    return cluster_factory(3, "--config", str(config), "--chunk-size", str(CHUNK))


def gc_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "gc", *args, "--url", cluster.nodes["n1"].url,
         "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def push_image(url: str, repo: str, tag: str, layer: bytes) -> bytes:
    config = json.dumps({"tag": tag, "layer": hashlib.sha256(layer).hexdigest()}).encode()
    config_digest = push_blob(url, repo, config)
    layer_digest = push_blob(url, repo, layer)
    body = image_manifest(config_digest, len(config), [(layer_digest, len(layer))])
    response = put_manifest(url, repo, tag, body)
    assert response.status_code == 201, response.text
    return body


def pull_everything(url: str, repo: str, tag: str) -> None:
    """The manifest and every blob it names, each checked against its digest."""
    manifest = httpx.get(f"{url}/v2/{repo}/manifests/{tag}", timeout=30,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert manifest.status_code == 200, manifest.text
    doc = manifest.json()
    for blob in [doc["config"], *doc["layers"]]:
        got = httpx.get(f"{url}/v2/{repo}/blobs/{blob['digest']}", timeout=60,
                        follow_redirects=True)
        assert got.status_code == 200, (blob["digest"], got.text[:200])
        assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob["digest"]


def gc_status(cluster: Cluster, node_id: str) -> dict:
    return cluster.status(node_id)["gc"]


def test_gc_frees_the_bytes_on_every_holder_and_cache_and_keeps_what_manifests_need(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path)
    n1 = cluster.nodes["n1"].url
    kept_layer, garbage, shared = os.urandom(6 * CHUNK), os.urandom(10 * CHUNK), os.urandom(
        4 * CHUNK)
    push_image(n1, "app", "v1", kept_layer)
    garbage_digest = push_blob(n1, "app", garbage)
    # A blob pushed to app, then mounted into other, whose manifest needs it.
    shared_digest = push_blob(n1, "app", shared)
    mounted = httpx.post(f"{n1}/v2/other/blobs/uploads/",
                         params={"mount": shared_digest, "from": "app"}, timeout=30)
    assert mounted.status_code == 201, mounted.text
    config = push_blob(n1, "other", b'{"other": true}')
    body = image_manifest(config, len(b'{"other": true}'), [(shared_digest, len(shared))])
    assert put_manifest(n1, "other", "v1", body).status_code == 201
    for node in cluster.nodes.values():  # every node serves it once: non-holders cache it
        got = httpx.get(f"{node.url}/v2/app/blobs/{garbage_digest}", timeout=30)
        assert got.content == garbage
    assert any(":cache" in where for cid in cids(garbage) for where in copies(cluster, cid))
    before = {n: chunk_bytes_on_disk(cluster, n) for n in cluster.nodes}

    time.sleep(1.2)  # the links' second has passed (grace 0) and the chunk store's grace
    dry = gc_cli(cluster, "run", "--dry-run", "--grace", "0", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    # garbage, and the shared blob's link in app (the blob stays: other needs it)
    assert (planned["blobs"], planned["bytes"], planned["links"]) == (1, len(garbage), 2)
    assert sum(n["chunks"] for n in planned["nodes"].values()) == 2 * len(cids(garbage))

    ran = gc_cli(cluster, "run", "--grace", "0")
    assert ran.returncode == 0, ran.stderr
    assert "removed 1 blobs" in ran.stdout

    for cid in cids(garbage):
        assert copies(cluster, cid) == set(), cid
    after = {n: chunk_bytes_on_disk(cluster, n) for n in cluster.nodes}
    # Two stored copies of every garbage chunk, and each cached copy, are gone.
    assert sum(before.values()) - sum(after.values()) >= 2 * len(garbage)
    assert all(after[n] < before[n] for n in cluster.nodes)
    for node in cluster.nodes.values():
        assert httpx.head(f"{node.url}/v2/app/blobs/{garbage_digest}").status_code == 404
        assert httpx.head(f"{node.url}/v2/app/blobs/{shared_digest}").status_code == 404
        pull_everything(node.url, "app", "v1")
        pull_everything(node.url, "other", "v1")
    status = gc_cli(cluster, "status")
    assert status.returncode == 0, status.stderr
    assert "epoch 1" in status.stdout and "swept epoch 1 of 1" in status.stdout
    metrics = httpx.get(f"{n1}/metrics").text
    assert "flotilla_gc_reclaimed_bytes_total" in metrics


def test_node_killed_mid_sweep_finishes_it_after_restart_and_loses_nothing_reachable(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path, gc_sweep_chunks_per_second=40)
    n1 = cluster.nodes["n1"].url
    kept = os.urandom(8 * CHUNK)
    push_image(n1, "app", "v1", kept)
    garbage = [os.urandom(40 * CHUNK) for _ in range(4)]  # 160 chunks: a slow sweep at 40/s
    for blob in garbage:
        push_blob(n1, "app", blob)
    time.sleep(1.2)
    response = call_sync(cluster.secret, "POST", f"{n1}/admin/gc/run",
                         {"grace_seconds": 0}, timeout=30)
    assert response.status_code == 200, response.text
    epoch = response.json()["epoch"]
    wait_until(lambda: gc_status(cluster, "n1")["examined"] > 0
               and gc_status(cluster, "n1")["state"] == "sweeping", "n1 started its sweep")
    cluster.nodes["n1"].kill()
    left = [cid for blob in garbage for cid in cids(blob)
            if "n1" in copies(cluster, cid)]
    assert left, "the kill came before the sweep finished"
    cluster.nodes["n1"].start()
    wait_until(lambda: gc_status(cluster, "n1")["swept_epoch"] >= epoch,
               "n1 finished the sweep after its restart")
    for blob in garbage:
        for cid in cids(blob):
            assert copies(cluster, cid) == set(), cid
    for node in cluster.nodes.values():
        pull_everything(node.url, "app", "v1")


def test_pushes_mounts_and_deletes_racing_gc_runs_lose_no_acknowledged_image(
    cluster_factory, tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, tmp_path, gc_sweep_chunks_per_second=0)
    cluster_nodes = [node.url for node in cluster.nodes.values()]
    # Few layer contents: deleted images make them garbage while new pushes reuse them.
    layers = [os.urandom(3 * CHUNK) for _ in range(4)]
    acknowledged: dict[tuple[str, str], str] = {}  # (repo, tag) → manifest digest
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    runs = [0]

    def pusher(worker: int) -> None:
        for i in range(ITERATIONS):
            url = cluster_nodes[(worker + i) % 3]
            tag = f"w{worker}-{i}"
            layer = layers[(worker * 7 + i) % len(layers)]
            config = json.dumps({"tag": tag}).encode()
            config_digest = push_blob(url, "app", config)
            layer_digest = push_blob(url, "app", layer)
            body = image_manifest(config_digest, len(config), [(layer_digest, len(layer))])
            response = put_manifest(url, "app", tag, body)
            if response.status_code == 201:
                with lock:
                    acknowledged[("app", tag)] = response.headers["Docker-Content-Digest"]
            else:  # a collection took a link first: refused whole, never half-stored
                assert response.status_code == 404, response.text
                assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
            if i % 3 == 0:
                mirror(url, tag, config_digest, len(config), layer_digest, len(layer))
            if i % 4 == 1:
                delete_one(url, worker)

    def mirror(url: str, tag: str, config: str, config_size: int, layer: str,
               layer_size: int) -> None:
        for digest in (config, layer):
            mounted = httpx.post(f"{url}/v2/mirror/blobs/uploads/",
                                 params={"mount": digest, "from": "app"}, timeout=30)
            if mounted.status_code != 201:
                return  # collected meanwhile: the registry offers an upload instead
        body = image_manifest(config, config_size, [(layer, layer_size)])
        response = put_manifest(url, "mirror", tag, body)
        if response.status_code == 201:
            with lock:
                acknowledged[("mirror", tag)] = response.headers["Docker-Content-Digest"]

    def delete_one(url: str, worker: int) -> None:
        with lock:
            mine = sorted(k for k in acknowledged if k[1].startswith(f"w{worker}-"))
            if len(mine) < 3:
                return
            repo, tag = mine[0]
            digest = acknowledged.pop((repo, tag))
        response = httpx.delete(f"{url}/v2/{repo}/manifests/{digest}", timeout=30)
        assert response.status_code in (202, 404), response.text

    def collector() -> None:
        while not stop.is_set():
            response = call_sync(cluster.secret, "POST", f"{cluster_nodes[runs[0] % 3]}"
                                 "/admin/gc/run", {"grace_seconds": 0}, timeout=30)
            assert response.status_code == 200, response.text
            runs[0] += 1
            time.sleep(0.2)

    def guarded(fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    gc_thread = threading.Thread(target=guarded, args=(collector,))
    workers = [threading.Thread(target=guarded, args=(pusher, w)) for w in range(2)]
    gc_thread.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    gc_thread.join()
    assert not errors, errors
    assert runs[0] >= 10 and len(acknowledged) >= 10

    time.sleep(1.2)
    final = call_sync(cluster.secret, "POST", f"{cluster_nodes[0]}/admin/gc/run",
                      {"grace_seconds": 0}, timeout=30).json()["epoch"]
    wait_until(lambda: all(gc_status(cluster, n)["swept_epoch"] >= final
                           for n in cluster.nodes), "every node swept the last collection")
    for url in cluster_nodes:
        for repo, tag in sorted(acknowledged):
            pull_everything(url, repo, tag)


def test_bad_gc_requests_get_an_oci_error_body_and_change_nothing(node_process) -> None:
    secret = load_or_create_secret(node_process.data / "secret")
    url = f"{node_process.url}/admin/gc/run"
    for payload in ({"grace_seconds": -1}, {"grace_seconds": "1h"}, {"grace_seconds": 1.5},
                    {"dry_run": "yes"}):
        response = call_sync(secret, "POST", url, payload, timeout=10)
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["errors"][0]["code"]
    assert call_sync(secret, "GET", url, timeout=10).status_code == 405
    status = call_sync(secret, "GET", f"{node_process.url}/admin/gc/status", timeout=10)
    assert status.status_code == 200 and status.json()["runs"] == []


def test_the_leader_collects_by_itself_every_gc_interval(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", free_port(),
                       ["--gc-interval", "1", "--gc-grace", "3"]).start()
    try:
        orphan = os.urandom(CHUNK)
        digest = push_blob(node.url, "app", orphan)
        kept = push_image(node.url, "app", "v1", os.urandom(CHUNK))
        wait_until(lambda: httpx.head(f"{node.url}/v2/app/blobs/{digest}").status_code == 404,
                   "a scheduled collection removed the orphan blob")
        pull_everything(node.url, "app", "v1")
        assert json.loads(kept)["layers"]
        audit = (node.data / "audit.log").read_text()
        assert '"action": "gc_collected"' in audit
    finally:
        node.stop()
