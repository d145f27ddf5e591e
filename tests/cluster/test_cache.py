"""A node's cache of fetched chunks stays within `cache_bytes`, however much is pulled.

Chunks a node fetched to serve a pull but does not own are kept in its cache,
least recently used evicted first; they never count as replicas (see
tests/unit/test_chunk_repair_store.py and the repair tests).
"""

from __future__ import annotations

import hashlib
import os

from tests.cluster.conftest import push_blob
from tests.cluster.test_chunks import MiB, pull


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.glob("??/*"))


def test_the_cache_stays_within_cache_bytes_while_pulls_fetch_more(cluster_factory) -> None:
    limit = 4 * MiB
    cluster = cluster_factory(
        3, "--chunk-size", str(MiB), "--replication", "1", "--cache-bytes", str(limit),
    )
    blobs = {push_blob(cluster.nodes["n2"].url, "cached", os.urandom(8 * MiB)): None
             for _ in range(3)}
    n1 = cluster.nodes["n1"]
    for _ in range(2):
        for digest in blobs:
            data = pull(n1.url, "cached", digest)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            assert folder_bytes(n1.data / "cache") <= limit
    chunks = cluster.status("n1")["chunks"]
    # n1 owns about a third of the 24 chunks and fetched the rest: far more than fit.
    assert 0 < chunks["cached_bytes"] <= limit
    assert chunks["cached_bytes"] == folder_bytes(n1.data / "cache")
    assert chunks["stored_bytes"] == folder_bytes(n1.data / "chunks")
