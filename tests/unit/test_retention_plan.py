"""Retention keeps exactly the policy's set: random tag histories and policies checked
against a reference model written plainly here, and the state machine applying
`ApplyRetention` the same way on every copy of the state."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import commands as c
from consensus.retention import ManifestAt, RetentionPolicy, TaggedAt, plan_retention
from consensus.state import StateMachine
from consensus.store import connect
from consensus.tag_patterns import TagPatternInvalid, check_tag_pattern

TAG_NAMES = ["latest", "v1.0.0", "v1.2.3", "v2", "pr-1", "pr-22", "dev-a", "build-7", "x"]
REGEXES = [r"^v\d+\.\d+\.\d+$", "^pr-", "^dev-", "latest", "7$", "^v"]
NOW = 1_000_000


def reference_model(policy: RetentionPolicy, tags: list[TaggedAt],
                    manifests: list[ManifestAt], now: int) -> tuple[set[str], set[str]]:
    """What the policy deletes, said as plainly as possible."""
    def considered(tag: str) -> bool:
        if policy.only and not any(re.search(p, tag) for p in policy.only):
            return False
        return not any(re.search(p, tag) for p in policy.keep)

    candidates = [t for t in tags if considered(t.tag)]
    deleted = set()
    for t in candidates:
        newer = [o for o in candidates
                 if o.pushed_at > t.pushed_at or (o.pushed_at == t.pushed_at and o.tag < t.tag)]
        if policy.keep_last is not None and len(newer) >= policy.keep_last:
            deleted.add(t.tag)
        if policy.older_than is not None and now - t.pushed_at > policy.older_than:
            deleted.add(t.tag)
    gone = set()
    if policy.untagged_older_than is not None:
        for m in manifests:
            tagged = any(t.digest == m.digest and t.tag not in deleted for t in tags)
            old = now - m.pushed_at > policy.untagged_older_than
            if not tagged and not m.referenced and old:
                gone.add(m.digest)
    return deleted, gone


ages = st.one_of(st.none(), st.integers(0, 2000))
policies = st.builds(
    RetentionPolicy,
    pattern=st.just("app"),
    keep_last=st.one_of(st.none(), st.integers(0, 6)),
    older_than=ages,
    keep=st.lists(st.sampled_from(REGEXES), max_size=2).map(tuple),
    only=st.lists(st.sampled_from(REGEXES), max_size=2).map(tuple),
    untagged_older_than=ages,
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[TaggedAt], list[ManifestAt]]:
    digests = [f"sha256:{i:064x}" for i in range(draw(st.integers(1, 6)))]
    manifests = [ManifestAt(d, draw(st.integers(NOW - 3000, NOW)), draw(st.booleans()))
                 for d in digests]
    names = draw(st.lists(st.sampled_from(TAG_NAMES), unique=True, max_size=len(TAG_NAMES)))
    tags = [TaggedAt(n, draw(st.sampled_from(digests)), draw(st.integers(NOW - 3000, NOW)))
            for n in names]
    return tags, manifests


@settings(max_examples=500, deadline=None)
@given(policies, histories())
def test_retention_deletes_exactly_what_the_reference_model_deletes(
    policy: RetentionPolicy, history: tuple[list[TaggedAt], list[ManifestAt]]
) -> None:
    tags, manifests = history
    plan = plan_retention(policy, tags, manifests, NOW)
    expected_tags, expected_manifests = reference_model(policy, tags, manifests, NOW)
    assert set(plan.tags) == expected_tags
    assert set(plan.manifests) == expected_manifests


def _state(tmp_path: Path, name: str) -> tuple[StateMachine, sqlite3.Connection]:
    conn = connect(tmp_path / f"{name}.db")
    return StateMachine(conn), conn


def _history_commands(tags: list[tuple[str, int, int]]) -> list[c.Command]:
    out: list[c.Command] = [c.PutRetentionPolicy(pattern="app", keep_last=2, keep=["^v"],
                                                 untagged_older_than=100)]
    for tag, seed, now in tags:
        digest = f"sha256:{seed:064x}"
        out.append(c.PutManifest(repo="app", digest=digest, media_type="m", body=b"{}",
                                 tag=tag, now=now))
    out.append(c.ApplyRetention(now=NOW))
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TAG_NAMES), st.integers(0, 5),
                          st.integers(NOW - 500, NOW)), max_size=12))
def test_apply_retention_leaves_every_copy_of_the_state_identical(
    tmp_path_factory: pytest.TempPathFactory, history: list[tuple[str, int, int]]
) -> None:
    folder = tmp_path_factory.mktemp("copies")
    entries = [cmd.encode() for cmd in _history_commands(history)]
    dumps = []
    results = []
    for name in ("n1", "n2", "n3"):
        machine, conn = _state(folder, name)
        for index, data in enumerate(entries, start=1):
            result = machine.apply(index, data)
        results.append(result.detail)
        dumps.append((
            conn.execute("SELECT repo, tag, digest, pushed_at FROM tags ORDER BY 1, 2").fetchall(),
            conn.execute("SELECT repo, digest FROM manifests ORDER BY 1, 2").fetchall(),
        ))
        conn.close()
    assert dumps[0] == dumps[1] == dumps[2]
    assert results[0] == results[1] == results[2]
    tags_left = [row[1] for row in dumps[0][0]]
    assert len([t for t in tags_left if not t.startswith("v")]) <= 2


def test_a_moved_immutable_tag_is_refused_by_the_state_machine(tmp_path: Path) -> None:
    machine, conn = _state(tmp_path, "n1")
    put = c.PutImmutableTags(pattern="team/*", exclude=["^latest$"])
    first = c.PutManifest(repo="team/a", digest="sha256:" + "1" * 64, media_type="m",
                          body=b"{}", tag="v1")
    moved = c.PutManifest(repo="team/a", digest="sha256:" + "2" * 64, media_type="m",
                          body=b"{}", tag="v1")
    latest = [c.PutManifest(repo="team/a", digest=f"sha256:{d * 64}", media_type="m",
                            body=b"{}", tag="latest") for d in "12"]
    results = [machine.apply(i, cmd.encode())
               for i, cmd in enumerate([put, first, moved, *latest, first], start=1)]
    assert [r.refusal.name if r.refusal else None for r in results] == [
        None, None, "TAG_IMMUTABLE", None, None, None]
    assert "team/*" in (results[2].detail or "")
    row = conn.execute("SELECT digest FROM tags WHERE tag = 'v1'").fetchone()
    assert row == ("sha256:" + "1" * 64,)


@pytest.mark.parametrize("pattern", [
    "(a+)+$", "(a|aa)*b", "(x*)*", r"(\w+\d)+", "(?:a|b)+c", r"(\d)\1", "(?=a)a",
    ".*.*.*.*x", "", "(", "x" * 200, "a{1,100}b{1,100}c*d*",
])
def test_tag_patterns_that_could_stall_the_state_machine_are_refused(pattern: str) -> None:
    with pytest.raises(TagPatternInvalid):
        check_tag_pattern(pattern)


@pytest.mark.parametrize("pattern", [
    r"^v\d+\.\d+\.\d+$", "^pr-", "^dev-", "latest", "^(v|release-)[0-9]+$", "[a-z]{2,4}",
    r"^v\d+(-rc)?$",
])
def test_usual_tag_patterns_are_taken(pattern: str) -> None:
    check_tag_pattern(pattern)


def test_a_command_holding_a_refused_pattern_never_decodes() -> None:
    data = c.PutImmutableTags(pattern="app", exclude=["(a+)+$"]).encode()
    with pytest.raises(c.CommandInvalid):
        c.decode(data)
