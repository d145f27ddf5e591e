"""The scrub finds damaged chunks at rest and repairs them before any client reads them.

A node re-reads every chunk it stores in the background, checks each against
its BLAKE3 id, quarantines a damaged one and fetches a good copy from another
holder, at no more than `scrub_bytes_per_second`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from node.storage.chunks import chunk_id
from tests.cluster.conftest import Cluster, push_blob
from tests.cluster.test_chunks import MiB, pull


def scrub_of(cluster: Cluster, node_id: str) -> dict:
    return cluster.status(node_id)["scrub"]


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_flipped_byte_at_rest_is_found_by_the_scrub_and_repaired_without_a_client_read(
    cluster_factory,
) -> None:
    cluster = cluster_factory(
        3, "--chunk-size", str(MiB), "--replication", "2",
        "--scrub-bytes-per-second", str(64 * MiB), "--scrub-interval", "1",
    )
    data = os.urandom(6 * MiB)
    digest = push_blob(cluster.nodes["n1"].url, "rot", data)
    stored = sorted((cluster.nodes["n2"].data / "chunks").glob("??/*"))
    assert stored, "placement gave n2 some chunks"
    damaged: Path = stored[0]
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))

    wait_for(lambda: scrub_of(cluster, "n2")["repaired"] >= 1, "the scrub repaired the chunk")
    assert chunk_id(damaged.read_bytes()) == damaged.name  # a good copy is back in place
    status = cluster.status("n2")
    assert status["scrub"]["damaged"] == 1 and status["scrub"]["quarantined"] == 0
    assert status["chunks"]["stored"] == len(stored)
    # Found at rest: no client read met the damaged copy.
    assert status["counters"].get("chunk_corrupt", 0) == 0
    assert pull(cluster.nodes["n2"].url, "rot", digest) == data
    log = Path(cluster.nodes["n2"].log).read_text()
    assert "quarantined" in log and "replaced by a good copy" in log


def test_the_scrub_reads_no_faster_than_its_rate(cluster_factory) -> None:
    rate = MiB  # bytes per second
    cluster = cluster_factory(
        1, "--chunk-size", str(MiB),
        "--scrub-bytes-per-second", str(rate), "--scrub-interval", "1",
    )
    push_blob(cluster.nodes["n1"].url, "paced", os.urandom(3 * MiB))
    first = scrub_of(cluster, "n1")["passes"]
    wait_for(lambda: scrub_of(cluster, "n1")["passes"] >= first + 2, "two more passes", 90)
    scrub = scrub_of(cluster, "n1")
    assert scrub["bytes_checked"] >= 3 * MiB
    # A pass that read the 3 MiB took at least the time the rate allows (a slow
    # machine only makes it longer).
    assert scrub["last_pass_seconds"] >= 0.9 * 3 * MiB / rate


def test_a_damaged_only_copy_stays_quarantined_until_a_push_brings_the_chunk_back(
    cluster_factory,
) -> None:
    cluster = cluster_factory(
        1, "--chunk-size", str(MiB),
        "--scrub-bytes-per-second", str(64 * MiB), "--scrub-interval", "1",
    )
    url = cluster.nodes["n1"].url
    data = os.urandom(2 * MiB)
    digest = push_blob(url, "only", data)
    damaged = sorted((cluster.nodes["n1"].data / "chunks").glob("??/*"))[0]
    damaged.write_bytes(b"rotten" + damaged.read_bytes()[6:])
    wait_for(lambda: scrub_of(cluster, "n1")["quarantined"] == 1, "the only copy was set aside")
    assert scrub_of(cluster, "n1")["repaired"] == 0  # no holder has a good copy
    assert cluster.nodes["n1"].proc.poll() is None

    assert push_blob(url, "only", data) == digest  # the client pushes the blob again
    wait_for(lambda: scrub_of(cluster, "n1")["quarantined"] == 0, "the quarantine was released")
    assert pull(url, "only", digest) == data
