"""Data from before push and link times were kept (an older version's state or log
entries: `now` absent, so 0) is never taken for ancient: retention and GC count its
age from their first run that sees it, the same on every node."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from consensus import commands as c
from consensus.state import StateMachine
from consensus.store import Queries, connect

DAY = 86400
NOW = 1_000 * DAY
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Machine:
    def __init__(self, path: Path) -> None:
        self.machine = StateMachine(connect(path))
        self.queries = Queries(self.machine.conn)
        self.index = 0

    def apply(self, command: c.Command) -> str | None:
        self.index += 1
        result = self.machine.apply(self.index, command.encode())
        assert result.ok, result
        return result.detail


def put_image(m: Machine, tag: str, n: int, now: int) -> str:
    data = b"config %d" % n
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    m.apply(c.PutBlob(repo="app", digest=digest, size=len(data), chunk_size=65536,
                      chunks=[hashlib.blake2b(data, digest_size=32).hexdigest()], now=now))
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                       "config": {"mediaType": "x", "digest": digest, "size": len(data)},
                       "layers": []}).encode()
    m.apply(c.PutManifest(repo="app", digest="sha256:" + hashlib.sha256(body).hexdigest(),
                          media_type=MANIFEST, body=body, tag=tag, blobs=[digest], now=now))
    return digest


def test_tags_without_a_push_time_age_from_the_first_retention_run(tmp_path: Path) -> None:
    m = Machine(tmp_path / "state.db")
    put_image(m, "old-1", 1, now=0)
    put_image(m, "old-2", 2, now=0)
    m.apply(c.PutRetentionPolicy(pattern="app", older_than=7 * DAY))
    assert all(not d.tags for _, d in m.queries.retention_plan(NOW))  # what `policy test` shows
    m.apply(c.ApplyRetention(now=NOW))
    assert m.queries.tags("app", last=None, limit=10) == ["old-1", "old-2"]
    m.apply(c.ApplyRetention(now=NOW + 6 * DAY))
    assert m.queries.tags("app", last=None, limit=10) == ["old-1", "old-2"]
    m.apply(c.ApplyRetention(now=NOW + 8 * DAY))
    assert m.queries.tags("app", last=None, limit=10) == []


def test_a_link_without_a_time_gets_its_grace_from_the_first_collection(
    tmp_path: Path,
) -> None:
    m = Machine(tmp_path / "state.db")
    data = b"a layer pushed by the older version, its manifest not yet"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    m.apply(c.PutBlob(repo="app", digest=digest, size=len(data), chunk_size=65536,
                      chunks=[hashlib.blake2b(data, digest_size=32).hexdigest()], now=0))
    assert m.queries.garbage(NOW, 0)[0].links == ()  # the dry run agrees with the run
    first = json.loads(m.apply(c.CollectGarbage(now=NOW, grace_seconds=3600)) or "{}")
    assert first["links"] == 0 and m.queries.repo_blob("app", digest) is not None
    m.apply(c.CollectGarbage(now=NOW + 1800, grace_seconds=3600))
    assert m.queries.repo_blob("app", digest) is not None
    gone = json.loads(m.apply(c.CollectGarbage(now=NOW + 3601, grace_seconds=3600)) or "{}")
    assert gone["links"] == 1 and m.queries.repo_blob("app", digest) is None
