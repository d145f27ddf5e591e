"""After healing: wait until every node serves everything that was acknowledged.

Converged means, in one pass: every node answers /readyz 200; every tag read
through every node gives the same value (these final reads go into the
history, so the checker also holds them to linearizability and to the
acknowledged writes); and every acknowledged blob has been pulled through
every node with bytes that hash to its digest (recorded as blob pulls; a blob
verified on a node stays verified, content never changes). Passes repeat
until that holds or the deadline passes; the time reported is from the heal
to the end of the first pass where it held.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scripts.chaos_harness.history import History
from scripts.chaos_harness.netcluster import ChaosCluster, in_client_ns
from scripts.chaos_harness.workload import TAGS, Client, Shared, Tally

VERIFIERS = 4  # blob pulls in parallel during verification
FINAL_PROCESS = 1000  # process numbers of the final reads (one per verifier thread)


@dataclass
class Convergence:
    converged: bool
    seconds: float
    passes: int
    not_ready: list[str] = field(default_factory=list)
    disagreeing_tags: dict[str, dict[str, str | None]] = field(default_factory=dict)
    unverified_blobs: int = 0
    # From the heal to the first pass where every node was ready and agreed on every tag:
    # the metadata's convergence; the rest of `seconds` is mostly pulling every blob copy.
    metadata_seconds: float | None = None
    blob_copies_verified: int = 0


def _verify_blobs(todo: list[tuple[str, str]], cluster: ChaosCluster, history: History,
                  shared: Shared, tally: Tally) -> set[tuple[str, str]]:
    """Pull each (digest, node) of `todo`; the ones that came back right."""
    good: set[tuple[str, str]] = set()
    lock = threading.Lock()
    work = list(todo)

    def body(i: int) -> None:
        client = Client(FINAL_PROCESS + i, cluster, history, shared, tally, random.Random(i))
        try:
            while True:
                with lock:
                    if not work:
                        return
                    digest, node = work.pop()
                if client.pull_blob(digest, node):
                    with lock:
                        good.add((digest, node))
        finally:
            client.close()

    threads = [threading.Thread(target=lambda i=i: in_client_ns(lambda: body(i)), daemon=True)
               for i in range(VERIFIERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return good


def converge(cluster: ChaosCluster, history: History, shared: Shared, tally: Tally,
             healed_at: float, timeout: float,
             say: Callable[[str], None] = print) -> Convergence:
    nodes = sorted(n.node_id for n in cluster.nodes.values())
    verified: set[tuple[str, str]] = set()
    reader_box: list[Client] = []

    def make_reader() -> None:
        reader_box.append(Client(FINAL_PROCESS + VERIFIERS, cluster, history, shared, tally,
                                 random.Random(0)))

    in_client_ns(make_reader)
    reader = reader_box[0]
    passes = 0
    result = Convergence(False, 0.0, 0)
    metadata_seconds: float | None = None
    deadline = healed_at + timeout
    try:
        while True:
            passes += 1
            not_ready = [f"n{k}" for k in cluster.nodes if not cluster.ready(k)]
            tags: dict[str, dict[str, str | None]] = {}
            if not not_ready:
                for tag in TAGS:
                    seen: dict[str, str | None] = {}
                    for node in nodes:
                        answered, value = in_client_ns(lambda t=tag, n=node: reader.read_tag(t, n))
                        seen[node] = value if answered else "(no answer)"
                    if len(set(seen.values())) != 1 or "(no answer)" in seen.values():
                        tags[tag] = seen
            if not not_ready and not tags and metadata_seconds is None:
                metadata_seconds = time.monotonic() - healed_at
            todo = [(d, n) for d, _ in list(shared.blobs) for n in nodes
                    if (d, n) not in verified]
            if not not_ready and todo:
                verified |= _verify_blobs(todo, cluster, history, shared, tally)
            unverified = len([1 for d, _ in shared.blobs for n in nodes
                              if (d, n) not in verified])
            result = Convergence(not not_ready and not tags and not unverified,
                                 time.monotonic() - healed_at, passes, not_ready, tags,
                                 unverified, metadata_seconds, len(verified))
            if result.converged or time.monotonic() > deadline:
                return result
            say(f"chaos: converging (pass {passes}): not ready {not_ready or 'none'}, "
                f"{len(tags)} tags disagree, {unverified} blob copies unverified")
            time.sleep(1.0)
    finally:
        in_client_ns(reader.close)
