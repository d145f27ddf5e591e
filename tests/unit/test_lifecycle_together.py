"""Retention, garbage collection and quotas on one state: what retention deletes, GC
then frees, and every quota gives the space back, with nothing a remaining manifest
needs lost."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from consensus import commands as c
from consensus.state import StateMachine
from consensus.store import Queries, connect
from tests.unit.test_quota_usage import counted_from_scratch

DAY = 86400
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob(n: int) -> tuple[str, bytes]:
    data = b"layer %d" % n * 100
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def test_retention_then_gc_frees_the_blobs_and_the_quota_of_what_it_deleted(
    tmp_path: Path,
) -> None:
    machine = StateMachine(connect(tmp_path / "state.db"))
    queries = Queries(machine.conn)
    index = 0

    def apply(command: c.Command) -> None:
        nonlocal index
        index += 1
        result = machine.apply(index, command.encode())
        assert result.ok, result

    apply(c.SetQuota(pattern="team", max_bytes=10**9))
    for n, age_days in ((1, 30), (2, 20), (3, 1)):  # three builds, one layer each
        now = 1_000 * DAY - age_days * DAY
        digest, data = blob(n)
        apply(c.PutBlob(repo="team/app", digest=digest, size=len(data), chunk_size=65536,
                        chunks=[hashlib.blake2b(data, digest_size=32).hexdigest()], now=now))
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": "x", "digest": digest, "size": len(data)},
                           "layers": []}).encode()
        apply(c.PutManifest(repo="team/app", digest="sha256:" + hashlib.sha256(body).hexdigest(),
                            media_type=MANIFEST, body=body, tag=f"build-{n}", blobs=[digest],
                            now=now))
    assert counted_from_scratch(machine, "team")[0] == queries.quotas()[0].used_bytes
    before = queries.quotas()[0].used_bytes

    now = 1_000 * DAY
    apply(c.PutRetentionPolicy(pattern="team/*", keep_last=1, untagged_older_than=0))
    apply(c.ApplyRetention(now=now))
    assert queries.tags("team/app", last=None, limit=10) == ["build-3"]
    apply(c.CollectGarbage(now=now, grace_seconds=3600))

    kept, _ = blob(3)
    assert queries.repo_blob("team/app", kept) is not None
    for gone in (1, 2):
        assert queries.blob(blob(gone)[0]) is None  # recipe collected: its chunks go next
    usage = queries.quotas()[0].used_bytes
    assert usage == counted_from_scratch(machine, "team")[0]
    assert 0 < usage < before
