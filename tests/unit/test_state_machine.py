"""The replicated state machine: deterministic, idempotent, and resumable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.state import Refusal, StateMachine
from consensus.store import Queries, connect, export_snapshot, import_snapshot


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def open_machine(folder: Path) -> tuple[StateMachine, Queries]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "state.sqlite"
    return StateMachine(connect(path)), Queries(connect(path, readonly=True))


def dump(machine: StateMachine) -> list[tuple]:
    """Every row of every table, in a fixed order: two equal dumps mean equal states."""
    rows: list[tuple] = []
    tables = [
        r[0]
        for r in machine.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )
    ]
    for table in tables:
        rows.append(("table", table))
        width = len(machine.conn.execute(f"PRAGMA table_info({table})").fetchall())
        order = "1, 2" if width > 1 else "1"
        rows.extend(machine.conn.execute(f"SELECT * FROM {table} ORDER BY {order}"))
    return rows


REPOS = st.sampled_from(["a", "team/app", "b/c"])
DIGESTS = st.integers(0, 5).map(digest)
TAGS = st.sampled_from(["latest", "1.0", "Beta", "beta"])
CHUNK_IDS = st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=3)

COMMAND = st.one_of(
    st.builds(
        lambda repo, d, chunks: c.PutBlob(
            repo=repo, digest=d, size=len(chunks) * 10, chunk_size=10, chunks=chunks
        ),
        REPOS, DIGESTS, CHUNK_IDS,
    ),
    st.builds(lambda repo, d: c.MountBlob(repo=repo, digest=d), REPOS, DIGESTS),
    st.builds(lambda repo, d: c.UnlinkBlob(repo=repo, digest=d), REPOS, DIGESTS),
    st.builds(
        lambda repo, d, tag, blobs, subject: c.PutManifest(
            repo=repo, digest=d, media_type="application/vnd.oci.image.manifest.v1+json",
            body=json.dumps({"d": d}).encode(), tag=tag, blobs=blobs, subject=subject,
        ),
        REPOS, DIGESTS, st.none() | TAGS, st.lists(DIGESTS, max_size=2), st.none() | DIGESTS,
    ),
    st.builds(lambda repo, d: c.DeleteManifest(repo=repo, digest=d), REPOS, DIGESTS),
    st.builds(lambda repo, tag: c.DeleteTag(repo=repo, tag=tag), REPOS, TAGS),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=st.lists(COMMAND, max_size=25))
def test_same_log_gives_same_state_on_every_node(tmp_path_factory, log: list[c.Command]) -> None:
    one, _ = open_machine(tmp_path_factory.mktemp("one"))
    two, _ = open_machine(tmp_path_factory.mktemp("two"))
    results_one = [one.apply(i, cmd.encode()) for i, cmd in enumerate(log, 1)]
    results_two = [two.apply(i, cmd.encode()) for i, cmd in enumerate(log, 1)]
    assert results_one == results_two
    assert dump(one) == dump(two)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=st.lists(COMMAND, max_size=20))
def test_replaying_applied_entries_changes_nothing(tmp_path_factory, log: list[c.Command]) -> None:
    machine, _ = open_machine(tmp_path_factory.mktemp("m"))
    for i, cmd in enumerate(log, 1):
        machine.apply(i, cmd.encode())
    before = dump(machine)
    for i, cmd in enumerate(log, 1):
        machine.apply(i, cmd.encode())
    assert dump(machine) == before
    assert machine.applied_index == len(log)


def test_retried_command_with_same_id_applies_once(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    put = c.PutManifest(
        repo="a", digest=digest(1), media_type="m", body=b"{}", tag="latest"
    )
    machine.apply(1, put.encode())
    machine.apply(2, c.DeleteTag(repo="a", tag="latest").encode())
    # The same proposal arrives again at a later index (a client retry): it must not re-tag.
    again = machine.apply(3, put.encode())
    assert again.ok
    assert queries.tag("a", "latest") is None


def test_restart_resumes_from_the_applied_index(tmp_path: Path) -> None:
    machine, _ = open_machine(tmp_path)
    machine.apply(1, c.PutBlob(repo="a", digest=digest(1), size=0, chunk_size=8,
                               chunks=[]).encode())
    machine.conn.close()
    reopened, queries = open_machine(tmp_path)
    assert reopened.applied_index == 1
    assert queries.repo_blob("a", digest(1)) is not None


def test_manifest_with_unknown_blob_is_refused_at_apply_time(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    result = machine.apply(1, c.PutManifest(
        repo="a", digest=digest(9), media_type="m", body=b"{}", blobs=[digest(1)]
    ).encode())
    assert result.refusal is Refusal.REFERENCED_BLOB_MISSING
    assert queries.manifest("a", digest(9)) is None
    assert machine.applied_index == 1


def test_blob_links_are_per_repository(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    machine.apply(1, c.PutBlob(repo="a", digest=digest(1), size=0, chunk_size=8,
                               chunks=[]).encode())
    assert queries.repo_blob("b", digest(1)) is None
    assert machine.apply(2, c.MountBlob(repo="b", digest=digest(1)).encode()).ok
    assert queries.repo_blob("b", digest(1)) is not None
    assert machine.apply(3, c.MountBlob(repo="b", digest=digest(2)).encode()).refusal is (
        Refusal.BLOB_MISSING
    )


def test_deleting_a_manifest_removes_its_tags_but_not_other_manifests(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    for i, (d, tag) in enumerate([(digest(1), "one"), (digest(1), "uno"), (digest(2), "two")], 1):
        machine.apply(i, c.PutManifest(repo="a", digest=d, media_type="m", body=b"{}",
                                       tag=tag).encode())
    assert machine.apply(4, c.DeleteManifest(repo="a", digest=digest(1)).encode()).ok
    assert queries.tags("a", last=None, limit=10) == ["two"]
    assert queries.manifest("a", digest(2)) is not None


def test_tags_sort_case_insensitively_with_ties_broken_by_case(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    for i, tag in enumerate(["b", "B", "a", "C", "A10", "a2"], 1):
        machine.apply(i, c.PutManifest(repo="r", digest=digest(i), media_type="m", body=b"{}",
                                       tag=tag).encode())
    assert queries.tags("r", last=None, limit=100) == ["a", "A10", "a2", "B", "b", "C"]
    assert queries.tags("r", last="A10", limit=2) == ["a2", "B"]


def test_undecodable_command_is_recorded_as_applied_without_effect(tmp_path: Path) -> None:
    machine, _ = open_machine(tmp_path)
    result = machine.apply(1, b"\xc1not msgpack")
    assert result.refusal is Refusal.COMMAND_INVALID
    assert machine.applied_index == 1


def test_snapshot_export_and_import_reproduce_the_state(tmp_path: Path) -> None:
    source, _ = open_machine(tmp_path / "source")
    for i in range(1, 30):
        source.apply(i, c.PutManifest(repo="r", digest=digest(i), media_type="m", body=b"{}",
                                      tag=f"t{i}").encode())
    copy = tmp_path / "copy.sqlite"
    assert export_snapshot(tmp_path / "source" / "state.sqlite", copy) == 29
    target, queries = open_machine(tmp_path / "target")
    target.apply(1, c.PutBlob(repo="other", digest=digest(99), size=0, chunk_size=8,
                              chunks=[]).encode())
    import_snapshot(target.conn, copy)
    assert dump(target) == dump(source)
    assert target.applied_index == 29
    assert queries.repo_blob("other", digest(99)) is None
    assert queries.tag("r", "t7") == digest(7)


def _register(machine: StateMachine, index: int, node_id: str) -> None:
    machine.apply(index, c.RegisterMember(node_id=node_id, raft="h:1", http="h:2").encode())


def test_drain_member_sets_and_clears_the_members_draining_flag(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    _register(machine, 1, "n1")
    _register(machine, 2, "n2")
    assert machine.apply(3, c.DrainMember(node_id="n2").encode()).ok
    assert queries.draining() == {"n2"}
    assert [m.draining for m in queries.members()] == [False, True]
    assert machine.apply(4, c.DrainMember(node_id="n2", draining=False).encode()).ok
    assert queries.draining() == set()


def test_drain_of_an_unknown_member_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    _register(machine, 1, "n1")
    before = [r for r in dump(machine) if r[0] != "table"]
    result = machine.apply(2, c.DrainMember(node_id="n9").encode())
    assert result.refusal is Refusal.MEMBER_MISSING
    assert result.detail == "n9"
    assert queries.draining() == set()
    assert machine.conn.execute("SELECT * FROM members").fetchall() == [
        r for r in before if r[0] == "n1"
    ]


def test_unregistering_a_member_clears_its_draining_flag(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    _register(machine, 1, "n2")
    machine.apply(2, c.DrainMember(node_id="n2").encode())
    machine.apply(3, c.UnregisterMember(node_id="n2").encode())
    assert queries.draining() == set()
    _register(machine, 4, "n2")  # the same id joining again is not draining
    assert queries.members()[0].draining is False


def test_a_database_without_the_draining_column_is_migrated_on_open(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE members (node_id TEXT PRIMARY KEY, raft TEXT NOT NULL,"
                " http TEXT NOT NULL, zone TEXT NOT NULL)")
    old.execute("INSERT INTO members VALUES ('n1', 'h:1', 'h:2', 'z')")
    old.commit()
    old.close()
    machine = StateMachine(connect(path))
    queries = Queries(connect(path, readonly=True))
    assert [(m.node_id, m.draining) for m in queries.members()] == [("n1", False)]
    assert machine.apply(1, c.DrainMember(node_id="n1").encode()).ok
    assert queries.draining() == {"n1"}


def test_a_snapshot_without_the_draining_column_imports(tmp_path: Path) -> None:
    import sqlite3

    snap = tmp_path / "old-snapshot.sqlite"
    old = sqlite3.connect(snap)
    source, _ = open_machine(tmp_path / "source")
    for table, sql in source.conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table'"):
        if table == "members":
            sql = ("CREATE TABLE members (node_id TEXT PRIMARY KEY, raft TEXT NOT NULL,"
                   " http TEXT NOT NULL, zone TEXT NOT NULL)")
        old.execute(sql)
    old.execute("INSERT INTO members VALUES ('n1', 'h:1', 'h:2', 'z')")
    old.execute("INSERT INTO meta VALUES ('applied', 7)")
    old.commit()
    old.close()
    target, queries = open_machine(tmp_path / "target")
    import_snapshot(target.conn, snap)
    assert [(m.node_id, m.draining) for m in queries.members()] == [("n1", False)]
    assert target.applied_index == 7
