"""CollectGarbage in the state machine: deterministic, never takes what a manifest needs,
and removes exactly what the dry run (the same selection, read-only) announced."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.state import Refusal, StateMachine
from consensus.store import Queries, connect
from tests.unit.test_state_machine import dump


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def chunk(n: int) -> str:
    return hashlib.sha256(f"chunk{n}".encode()).hexdigest()


def open_machine(folder: Path) -> tuple[StateMachine, Queries]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "state.sqlite"
    return StateMachine(connect(path)), Queries(connect(path, readonly=True))


def put_blob(repo: str, n: int, now: int, chunks: list[int] | None = None) -> c.PutBlob:
    ids = [chunk(i) for i in (chunks if chunks is not None else [n])]
    return c.PutBlob(repo=repo, digest=digest(n), size=10 * len(ids), chunk_size=10,
                     chunks=ids, now=now)


def manifest(repo: str, n: int, blobs: list[int], tag: str | None = None) -> c.PutManifest:
    return c.PutManifest(repo=repo, digest=digest(1000 + n), media_type="m",
                         body=json.dumps(blobs).encode(), tag=tag,
                         blobs=[digest(b) for b in blobs])


class Log:
    def __init__(self, machine: StateMachine) -> None:
        self.machine, self.index = machine, 0

    def apply(self, cmd: c.Command):
        self.index += 1
        return self.machine.apply(self.index, cmd.encode())


def test_unreferenced_blob_past_grace_is_removed_and_counted(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    log = Log(machine)
    log.apply(put_blob("a", 1, now=100))
    log.apply(put_blob("a", 2, now=100))
    log.apply(manifest("a", 1, [1]))
    result = log.apply(c.CollectGarbage(now=200, grace_seconds=50))
    assert json.loads(result.detail) == {"epoch": 1, "links": 1, "blobs": 1, "bytes": 10}
    assert queries.blob(digest(2)) is None
    assert queries.repo_blob("a", digest(1)) is not None
    assert queries.gc_epoch() == 1
    assert queries.gc_runs()[0].bytes == 10


def test_blob_within_grace_stays_until_its_manifest_arrives(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    log = Log(machine)
    log.apply(put_blob("a", 1, now=1000))
    assert log.apply(c.CollectGarbage(now=1500, grace_seconds=3600)).ok
    assert queries.repo_blob("a", digest(1)) is not None
    assert log.apply(manifest("a", 1, [1])).ok
    log.apply(c.CollectGarbage(now=99_999, grace_seconds=0))
    assert queries.repo_blob("a", digest(1)) is not None


def test_blob_still_linked_from_another_repository_stays(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    log = Log(machine)
    log.apply(put_blob("a", 1, now=100))
    log.apply(c.MountBlob(repo="b", digest=digest(1), now=100))
    log.apply(manifest("b", 1, [1]))
    log.apply(c.CollectGarbage(now=10_000, grace_seconds=0))
    assert queries.repo_blob("a", digest(1)) is None  # a's link was unreferenced
    assert queries.repo_blob("b", digest(1)) is not None
    assert queries.blob(digest(1)) is not None


def test_manifest_naming_a_collected_blob_is_refused(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    log = Log(machine)
    log.apply(put_blob("a", 1, now=100))
    log.apply(c.CollectGarbage(now=10_000, grace_seconds=0))
    assert log.apply(manifest("a", 1, [1])).refusal is Refusal.REFERENCED_BLOB_MISSING
    assert log.apply(c.MountBlob(repo="b", digest=digest(1), now=10_000)).refusal is (
        Refusal.BLOB_MISSING
    )


def test_pushing_an_old_blob_again_starts_its_grace_anew(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    log = Log(machine)
    log.apply(put_blob("a", 1, now=100))
    log.apply(put_blob("a", 1, now=5000))
    log.apply(c.CollectGarbage(now=5100, grace_seconds=600))
    assert queries.repo_blob("a", digest(1)) is not None


def test_entries_written_before_gc_existed_still_decode() -> None:
    old = msgpack.packb({"type": "put_blob", "id": "x1", "repo": "a", "digest": digest(1),
                         "size": 0, "chunk_size": 8, "chunks": []})
    assert c.decode(old).now == 0
    mount = msgpack.packb({"type": "mount_blob", "id": "x2", "repo": "a", "digest": digest(1)})
    assert c.decode(mount).now == 0


def test_collect_garbage_with_a_bad_field_never_decodes() -> None:
    for now, grace in ((-1, 0), (0, -5), ("1", 0), (0, 1.5)):
        data = msgpack.packb({"type": "collect_garbage", "id": "g", "now": now,
                              "grace_seconds": grace})
        assert not c.is_valid(data)
    cmd = c.CollectGarbage(now=5, grace_seconds=0)
    assert c.decode(cmd.encode()) == cmd


REPOS = st.sampled_from(["a", "b"])
BLOB = st.integers(0, 5)
NOW = st.integers(0, 100)
COMMAND = st.one_of(
    st.builds(lambda r, n, t, ch: put_blob(r, n, t, ch), REPOS, BLOB, NOW,
              st.lists(st.integers(0, 6), min_size=1, max_size=3)),
    st.builds(lambda r, n, t: c.MountBlob(repo=r, digest=digest(n), now=t), REPOS, BLOB, NOW),
    st.builds(lambda r, n: c.UnlinkBlob(repo=r, digest=digest(n)), REPOS, BLOB),
    st.builds(lambda r, n, bs: manifest(r, n, bs), REPOS, st.integers(0, 3),
              st.lists(BLOB, max_size=3)),
    st.builds(lambda r, n: c.DeleteManifest(repo=r, digest=digest(1000 + n)), REPOS,
              st.integers(0, 3)),
    st.builds(lambda t, g: c.CollectGarbage(now=t, grace_seconds=g), NOW, st.integers(0, 60)),
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=st.lists(COMMAND, max_size=30))
def test_collection_is_deterministic_keeps_everything_referenced_and_matches_dry_run(
    tmp_path_factory, log: list[c.Command]
) -> None:
    one, queries = open_machine(tmp_path_factory.mktemp("one"))
    two, _ = open_machine(tmp_path_factory.mktemp("two"))
    for i, cmd in enumerate(log, 1):
        if isinstance(cmd, c.CollectGarbage):
            announced, _ = queries.garbage(cmd.now, cmd.grace_seconds)
            links_before = set(queries.conn.execute("SELECT repo, digest FROM repo_blobs"))
            blobs_before = {r[0] for r in queries.conn.execute("SELECT digest FROM blobs")}
        result = one.apply(i, cmd.encode())
        assert two.apply(i, cmd.encode()) == result
        if isinstance(cmd, c.CollectGarbage):
            links_after = set(queries.conn.execute("SELECT repo, digest FROM repo_blobs"))
            blobs_after = {r[0] for r in queries.conn.execute("SELECT digest FROM blobs")}
            assert links_before - links_after == set(announced.links)
            assert blobs_before - blobs_after == {blob[0] for blob in announced.blobs}
        # Whatever a manifest names as a blob is linked in its repository and has a recipe.
        for repo, target in queries.conn.execute(
            "SELECT repo, target FROM manifest_refs WHERE target NOT IN"
            " (SELECT digest FROM manifests m WHERE m.repo = manifest_refs.repo)"
        ):
            assert queries.repo_blob(repo, target) is not None
    assert dump(one) == dump(two)


def test_a_snapshot_from_before_gc_imports_with_its_links_young_until_a_grace_has_passed(
    tmp_path: Path,
) -> None:
    from consensus.store import export_snapshot, import_snapshot

    machine, _ = open_machine(tmp_path / "old")
    Log(machine).apply(put_blob("a", 1, now=500))
    snapshot = tmp_path / "snap.sqlite"
    export_snapshot(tmp_path / "old" / "state.sqlite", snapshot)
    old = sqlite3.connect(snapshot)
    old.execute("DROP TABLE gc_runs")
    old.execute("DROP INDEX repo_blobs_by_digest")
    old.execute("ALTER TABLE repo_blobs DROP COLUMN linked_at")
    old.commit()
    old.close()
    fresh, queries = open_machine(tmp_path / "new")
    import_snapshot(fresh.conn, snapshot)
    assert queries.repo_blob("a", digest(1)) is not None
    assert queries.gc_runs() == []
    # linked_at 0 (no time known): the first collection dates the link, never frees it.
    fresh.apply(fresh.applied_index + 1, c.CollectGarbage(now=1000, grace_seconds=0).encode())
    assert queries.repo_blob("a", digest(1)) is not None
    fresh.apply(fresh.applied_index + 1, c.CollectGarbage(now=1001, grace_seconds=0).encode())
    assert queries.repo_blob("a", digest(1)) is None
