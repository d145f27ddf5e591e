"""`scripts/bench gc`: what a garbage collection costs, and what it does to pushes meanwhile.

First the state alone, in this process: a state machine is given `--blobs`
synthetic recipes of one small chunk each, spread over 100 repositories, and
`--manifests` manifests naming four blobs each, so a fifth of the recipes is
garbage. It times the mark (the read-only selection a dry run makes) and the
collection itself (CollectGarbage applied: the same selection, the deletes,
one transaction). Then a chunk store with one file per recipe is swept the
way every node sweeps after a collection (list, compare against the recipes
left, delete the rest). Last, one `flotilla serve` node takes pushes (a small
layer, its config and manifest, plus an orphan blob) from `--pushers` threads
for `--seconds`, once alone and once while collections with grace 0 run back
to back, and the push latency p50/p99 of both is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import blake3
import httpx

from consensus import commands as c
from consensus.garbage import select_garbage
from consensus.state import StateMachine
from consensus.store import Queries, connect
from node.storage.chunks import ChunkStore
from node.storage.layout import DataDir
from scripts.benchmarks.processes import flotilla_node
from scripts.benchmarks.table import render

REPOS = 100
APPLY_BATCH = 2000
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blobs", type=int, default=50_000, help="recipes (default 50,000)")
    parser.add_argument("--manifests", type=int, default=10_000,
                        help="manifests, four blobs each (default 10,000)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="pushing time with and without GC (default 10)")
    parser.add_argument("--pushers", type=int, default=8, help="pushing threads (default 8)")
    parser.add_argument("--node-blobs", dest="node_blobs", type=int, default=None,
                        help="blobs pushed into the node before its pushes are timed, a "
                             "fifth of them left unreferenced (default --blobs; 0: none)")


def _digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(b"blob%d" % n).hexdigest()


def _chunk(n: int) -> bytes:
    return b"chunk %d " % n * 16


def _chunk_id(n: int) -> str:
    return blake3.blake3(_chunk(n)).hexdigest()


def _state(folder: Path, blobs: int, manifests: int) -> tuple[StateMachine, Queries]:
    path = folder / "state.sqlite"
    machine, queries = StateMachine(connect(path)), Queries(connect(path, readonly=True))
    commands: list[c.Command] = [
        c.PutBlob(repo=f"r{n % REPOS}", digest=_digest(n), size=len(_chunk(n)), chunk_size=4096,
                  chunks=[_chunk_id(n)], now=0)
        for n in range(blobs)
    ]
    for m in range(manifests):
        # Four blobs of one repository: n, n + REPOS, … all share n % REPOS.
        base = (m // REPOS) * 4 * REPOS + m % REPOS
        refs = [_digest(base + k * REPOS) for k in range(4) if base + k * REPOS < blobs]
        commands.append(c.PutManifest(repo=f"r{m % REPOS}", digest=_digest(10**9 + m),
                                      media_type=MANIFEST_TYPE, body=json.dumps(refs).encode(),
                                      blobs=refs))
    for start in range(0, len(commands), APPLY_BATCH):
        batch = commands[start : start + APPLY_BATCH]
        machine.apply_batch([(start + i + 1, cmd.encode()) for i, cmd in enumerate(batch)])
    return machine, queries


def _state_and_chunks(blobs: int, manifests: int) -> list[list[str]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-gc-") as tmp:
        root = Path(tmp)
        machine, queries = _state(root, blobs, manifests)
        started = time.perf_counter()
        garbage = select_garbage(queries.conn, 10**6, 0)
        mark = time.perf_counter() - started
        started = time.perf_counter()
        machine.apply(machine.applied_index + 1,
                      c.CollectGarbage(now=10**6, grace_seconds=0).encode())
        collect = time.perf_counter() - started
        rows.append(["mark (dry-run selection)", f"{mark * 1000:.0f} ms",
                     f"{len(garbage.blobs)} recipes, {len(garbage.links)} links"])
        rows.append(["collect (CollectGarbage applied)", f"{collect * 1000:.0f} ms",
                     f"{blobs - len(garbage.blobs)} recipes left"])

        data = DataDir(root / "node")
        data.prepare()
        for n in range(blobs):
            (data.chunk_path(_chunk_id(n))).write_bytes(_chunk(n))
        store = ChunkStore(data, grace_seconds=0.001)
        time.sleep(0.01)
        started = time.perf_counter()
        referenced = {cid for ids in queries.blob_chunk_lists() for cid in ids}
        stored = list(store.stored_ids())
        dropped, _ = store.drop_unreferenced(stored, referenced)
        sweep = time.perf_counter() - started
        rows.append(["chunk sweep (one node, unthrottled)", f"{sweep * 1000:.0f} ms",
                     f"{len(dropped)} of {len(stored)} chunk files deleted"])
        machine.conn.close()
        queries.conn.close()
    return rows


def _push_latencies(url: str, seconds: float, pushers: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def push(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                layer = os.urandom(4096)
                config = json.dumps({"w": worker, "i": i}).encode()
                started = time.perf_counter()
                digests = []
                for blob in (layer, config, os.urandom(2048)):  # the last one: an orphan
                    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
                    client.post(f"/v2/bench{worker}/blobs/uploads/", params={"digest": digest},
                                content=blob).raise_for_status()
                    digests.append(digest)
                body = json.dumps({
                    "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": digests[1], "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": digests[0], "size": len(layer)}],
                }).encode()
                client.put(f"/v2/bench{worker}/manifests/t{i}", content=body,
                           headers={"Content-Type": MANIFEST_TYPE}).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=push, args=(w,)) for w in range(pushers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _seed(url: str, blobs: int, manifests: int, threads: int = 16) -> float:
    """Push `blobs` tiny blobs over 100 repositories and `manifests` manifests naming four
    of them each through the API, so the node's state is the size the collections mark;
    returns the seconds it took."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        return local.client

    def push_blob(n: int) -> None:
        data = b"seed blob %d" % n
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client().post(f"/v2/seed{n % REPOS}/blobs/uploads/", params={"digest": digest},
                      content=data).raise_for_status()

    def push_manifest(m: int) -> None:
        repo = m % REPOS
        members = [n for n in range(repo, blobs, REPOS)][(m // REPOS) * 4:][:4]
        if len(members) < 2:
            return
        descriptors = []
        for n in members:
            data = b"seed blob %d" % n
            descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                                "size": len(data)})
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {**descriptors[0],
                                      "mediaType": "application/vnd.oci.image.config.v1+json"},
                           "layers": descriptors[1:]}).encode()
        client().put(f"/v2/seed{repo}/manifests/m{m}", content=body,
                     headers={"Content-Type": MANIFEST_TYPE}).raise_for_status()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(push_blob, range(blobs)))
        list(pool.map(push_manifest, range(manifests)))
    return time.monotonic() - started


def _collect_until(url: str, stop: threading.Event, runs: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            # A grace of a minute: this run's pushes keep their layers until their manifest.
            client.post("/admin/gc/run", json={"grace_seconds": 60}).raise_for_status()
            runs[0] += 1


def _percentiles(values: list[float]) -> tuple[str, str]:
    cuts = statistics.quantiles(values, n=100)
    return f"{cuts[49] * 1000:.1f} ms", f"{cuts[98] * 1000:.1f} ms"


def run(args: argparse.Namespace) -> int:
    rows = _state_and_chunks(args.blobs, args.manifests)
    print(render([f"state of {args.manifests} manifests, {args.blobs} recipes", "time",
                  "what"], rows))
    print()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-gc-") as tmp:
        with flotilla_node(Path(tmp), chunk_size=64 * 1024) as node:
            seeded = args.blobs if args.node_blobs is None else args.node_blobs
            if seeded:
                took = _seed(node.url, seeded, min(args.manifests, seeded * 4 // 5 // 4))
                print(f"the node holds {seeded} blobs and their manifests "
                      f"(pushed in {took:.0f} s) before its pushes are timed")
            alone = _push_latencies(node.url, args.seconds, args.pushers)
            stop, runs = threading.Event(), [0]
            collector = threading.Thread(target=_collect_until, args=(node.url, stop, runs))
            collector.start()
            try:
                during = _push_latencies(node.url, args.seconds, args.pushers)
            finally:
                stop.set()
                collector.join()
    table = [["pushes alone", str(len(alone)), *_percentiles(alone)],
             [f"pushes during {runs[0]} collections", str(len(during)), *_percentiles(during)]]
    print(render([f"push (3 blobs + manifest), {args.pushers} threads", "pushes", "p50", "p99"],
                 table))
    return 0
