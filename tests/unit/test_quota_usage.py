"""Quota usage kept as counters by the state machine equals usage counted from scratch,
and a change that would pass a quota is refused with nothing stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.quotas import covers
from consensus.state import Refusal, StateMachine
from consensus.store import Queries, connect

CHUNK = "ab" * 32
REPOS = ["team/a", "team/b", "team", "other/a", "teamx/a"]


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def open_machine(folder: Path) -> tuple[StateMachine, Queries]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "state.sqlite"
    return StateMachine(connect(path)), Queries(connect(path, readonly=True))


def apply(machine: StateMachine, command: c.Command) -> Refusal | None:
    index = machine.applied_index + 1
    return machine.apply(index, command.encode()).refusal


def counted_from_scratch(machine: StateMachine, pattern: str) -> tuple[int, int]:
    """The usage a quota on `pattern` should show, read off the tables themselves."""
    links = machine.conn.execute(
        "SELECT r.repo, r.digest, b.size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest"
        " UNION ALL SELECT repo, digest, length(body) FROM manifests"
    ).fetchall()
    sizes = {d: s for repo, d, s in links if covers(pattern, repo)}
    repos = {repo for repo, _, _ in links if covers(pattern, repo)}
    return sum(sizes.values()), len(repos)


def test_namespace_covers_itself_and_below_and_a_glob_covers_what_it_matches() -> None:
    assert covers("team", "team") and covers("team", "team/app/x")
    assert not covers("team", "teamx/app")
    assert covers("team-*", "team-a/app") and not covers("team-*", "team/app")


def test_a_blob_linked_from_two_repositories_of_the_namespace_counts_once(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    apply(machine, c.SetQuota(pattern="team", max_bytes=1000))
    apply(machine, c.PutBlob(repo="team/a", digest=digest(1), size=600, chunk_size=600,
                             chunks=[CHUNK]))
    assert apply(machine, c.MountBlob(repo="team/b", digest=digest(1))) is None
    (quota,) = queries.quotas()
    assert (quota.used_bytes, quota.used_repos) == (600, 2)


def test_a_blob_that_would_pass_the_quota_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    apply(machine, c.SetQuota(pattern="team", max_bytes=1000, max_repos=1))
    apply(machine, c.PutBlob(repo="team/a", digest=digest(1), size=600, chunk_size=600,
                             chunks=[CHUNK]))
    refused = machine.apply(machine.applied_index + 1, c.PutBlob(
        repo="team/a", digest=digest(2), size=500, chunk_size=500, chunks=[CHUNK]).encode())
    assert refused.refusal is Refusal.QUOTA_EXCEEDED
    assert "quota team" in (refused.detail or "") and "600 B of 1000 B used" in refused.detail
    assert queries.blob(digest(2)) is None
    assert apply(machine, c.MountBlob(repo="team/b", digest=digest(1))) is Refusal.QUOTA_EXCEEDED
    assert not queries.repository_exists("team/b")
    (quota,) = queries.quotas()
    assert (quota.used_bytes, quota.used_repos) == (600, 1)
    # Outside the namespace nothing is capped.
    assert apply(machine, c.PutBlob(repo="other/a", digest=digest(2), size=5000,
                                    chunk_size=5000, chunks=[CHUNK])) is None


def test_a_new_quota_counts_what_is_already_stored(tmp_path: Path) -> None:
    machine, queries = open_machine(tmp_path)
    for repo in ("team/a", "team/b", "other/a"):
        apply(machine, c.PutBlob(repo=repo, digest=digest(1), size=70, chunk_size=70,
                                 chunks=[CHUNK]))
    apply(machine, c.PutManifest(repo="team/a", digest=digest(9), media_type="x",
                                 body=b"{}" * 10, blobs=[digest(1)]))
    apply(machine, c.SetQuota(pattern="team", max_repos=5))
    (quota,) = queries.quotas()
    assert (quota.used_bytes, quota.used_repos, quota.max_bytes) == (90, 2, None)


operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "mount", "unlink", "manifest", "delete_manifest"]),
        st.sampled_from(REPOS),
        st.integers(0, 4),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations, st.booleans())
def test_counters_always_equal_usage_counted_from_scratch(
    tmp_path_factory, ops: list[tuple[str, str, int]], quota_first: bool
) -> None:
    machine, queries = open_machine(tmp_path_factory.mktemp("state"))
    patterns = ["team", "team*", "*/a"]
    if quota_first:
        for pattern in patterns:
            apply(machine, c.SetQuota(pattern=pattern, max_bytes=10_000, max_repos=3))
    for op, repo, n in ops:
        if op == "put":
            apply(machine, c.PutBlob(repo=repo, digest=digest(n), size=100 * (n + 1),
                                     chunk_size=1 << 20, chunks=[CHUNK]))
        elif op == "mount":
            apply(machine, c.MountBlob(repo=repo, digest=digest(n)))
        elif op == "unlink":
            apply(machine, c.UnlinkBlob(repo=repo, digest=digest(n)))
        elif op == "manifest":
            apply(machine, c.PutManifest(repo=repo, digest=digest(100 + n), media_type="x",
                                         body=b"m" * (n + 1)))
        else:
            apply(machine, c.DeleteManifest(repo=repo, digest=digest(100 + n)))
    if not quota_first:
        for pattern in patterns:
            apply(machine, c.SetQuota(pattern=pattern, max_bytes=10_000, max_repos=3))
    for quota in queries.quotas():
        used = counted_from_scratch(machine, quota.pattern)
        assert (quota.used_bytes, quota.used_repos) == used
        if quota_first:  # enforced all along: never over its caps
            assert used[0] <= 10_000 and used[1] <= 3
