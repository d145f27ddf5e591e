"""A node taking many large manifests keeps its Raft log bounded in bytes.

One real `flotilla serve` process, with `--snapshot-bytes` at 16 MiB so the
test stays short, takes manifests close to the 4 MiB limit, each a Raft
entry of about 8 MiB, well past `snapshot_bytes` in total: snapshots are
taken by bytes (the count is far below `snapshot_every`), the write-ahead
log on disk and the log in memory stay near `snapshot_bytes`, and after a
restart every manifest is served byte for byte from the snapshot and what is
left of the log.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from consensus.raft.wal import DEFAULT_SEGMENT_BYTES
from node.cluster.auth import load_or_create_secret
from node.cluster.client import call_sync
from tests.cluster.conftest import MANIFEST_TYPE, push_blob, put_manifest
from tests.cluster.test_big_entries import MANIFEST_BYTES, padded_manifest
from tests.conftest import NodeProcess, free_port

MiB = 1 << 20
SNAPSHOT_BYTES = 16 * MiB
MANIFESTS = 12  # about 100 MiB of entries: well past twice snapshot_bytes
ENTRY_BYTES = 2 * MANIFEST_BYTES + MiB  # the body, its annotation again, the rest


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def anonymous_memory(pid: int) -> int:
    """Bytes of the process's memory that are not file pages (mapped snapshots)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc")


def test_many_large_manifests_keep_the_raft_log_bounded_and_all_survive_a_restart(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "secret"
    load_or_create_secret(secret_file)
    node = NodeProcess(tmp_path / "node", free_port(), [
        "--secret-file", str(secret_file), "--snapshot-bytes", str(SNAPSHOT_BYTES),
    ])
    node.start()
    try:
        config = b'{"architecture":"amd64","os":"linux"}'
        config_digest = push_blob(node.url, "big/app", config)
        bodies = [
            padded_manifest(config_digest, len(config), n, MANIFEST_BYTES)
            for n in range(MANIFESTS)
        ]
        largest_wal = 0
        wal = node.data / "state" / "raft" / "wal"
        for n, body in enumerate(bodies):
            response = put_manifest(node.url, "big/app", f"v{n}", body, timeout=60)
            assert response.status_code == 201, response.text
            largest_wal = max(largest_wal, folder_bytes(wal))

        status = call_sync(load_or_create_secret(secret_file), "GET",
                           f"{node.url}/_cluster/status", node_id="n1", timeout=5).json()
        assert 0 < status["snapshot_index"] < 10_000  # taken by bytes, not by count
        # A leader takes no writes while its log holds twice snapshot_bytes.
        assert status["log_bytes"] <= 2 * SNAPSHOT_BYTES + ENTRY_BYTES
        # On disk: that log, plus the segment an older entry keeps alive.
        wal_bound = 2 * SNAPSHOT_BYTES + DEFAULT_SEGMENT_BYTES + 2 * ENTRY_BYTES
        assert largest_wal <= wal_bound, (largest_wal, wal_bound)
        # Generous: the log, the allocator's free heap, requests in flight.
        assert anonymous_memory(node.proc.pid) <= 512 * MiB

        node.stop()
        node.start()
        for n, body in enumerate(bodies):
            response = httpx.get(f"{node.url}/v2/big/app/manifests/v{n}",
                                 headers={"Accept": MANIFEST_TYPE}, timeout=30)
            assert response.status_code == 200, response.text
            assert response.content == body
    finally:
        node.stop()
