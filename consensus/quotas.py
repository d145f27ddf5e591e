"""Quotas per namespace: what each one covers, and its usage kept as counters.

A quota names a namespace (`team`: the repository `team` and every `team/…`) or a
glob over repository names (`team-*`, `*/cache`). Its usage is the bytes stored
in the repositories it covers — each blob or manifest body counted once however
many of them link it — and the number of those repositories. Usage is kept in
counters the state machine moves in the same transaction as the link it counts
(`quota_objects`, `quota_repos`, `quotas.used_*`), so checking a push costs a few
indexed reads per quota, never a scan; only setting a new quota scans, once, to
count what is already there. Everything here is pure SQL and string matching:
the state machine stays deterministic.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from consensus import repo_patterns


def covers(pattern: str, repo: str) -> bool:
    """Whether the quota `pattern` covers the repository `repo`: a glob as everywhere,
    and a plain name covers its namespace (`team` covers `team/app`)."""
    if "*" in pattern:
        return repo_patterns.covers(pattern, repo)
    return repo == pattern or repo.startswith(pattern + "/")


@dataclass(frozen=True, slots=True)
class Quota:
    pattern: str
    max_bytes: int | None  # None: no cap on bytes
    max_repos: int | None  # None: no cap on repositories
    used_bytes: int
    used_repos: int


def _quota(row: tuple) -> Quota:
    return Quota(*row)


_COLUMNS = "pattern, max_bytes, max_repos, used_bytes, used_repos"


def all_quotas(conn: sqlite3.Connection) -> list[Quota]:
    return [_quota(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM quotas ORDER BY pattern")]


def quotas_covering(conn: sqlite3.Connection, repo: str) -> list[Quota]:
    """The quotas that cover `repo` (a registry holds a handful of quotas, so they are
    matched here rather than indexed)."""
    return [q for q in all_quotas(conn) if covers(q.pattern, repo)]


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                       ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def over(quota: Quota, add_bytes: int, add_repos: int) -> str | None:
    """How adding `add_bytes` and `add_repos` would pass the quota, in words (what the
    refusal says), or None when it fits."""
    if quota.max_bytes is not None and add_bytes and quota.used_bytes + add_bytes > quota.max_bytes:
        return (f"quota {quota.pattern}: {format_bytes(quota.used_bytes)} of "
                f"{format_bytes(quota.max_bytes)} used, this push adds {format_bytes(add_bytes)}")
    if quota.max_repos is not None and add_repos and quota.used_repos + add_repos > quota.max_repos:
        return (f"quota {quota.pattern}: {quota.used_repos} of {quota.max_repos} "
                f"repositories used, this push makes a new one")
    return None


def charge(conn: sqlite3.Connection, repo: str, digest: str, size: int) -> str | None:
    """Count a new link of `repo` to `digest` (`size` bytes) in every quota covering
    `repo`; or, when that would pass one of them, change nothing and say which.

    The caller has checked that the link is new (the repository did not link the
    digest yet)."""
    plan = []
    for quota in quotas_covering(conn, repo):
        known, new_repo = _novelty(conn, quota.pattern, repo, digest)
        refusal = over(quota, 0 if known else size, 1 if new_repo else 0)
        if refusal:
            return refusal
        plan.append(quota.pattern)
    for pattern in plan:
        _count_link(conn, pattern, repo, digest, size)
    return None


def _novelty(conn: sqlite3.Connection, pattern: str, repo: str, digest: str
             ) -> tuple[bool, bool]:
    """Whether the quota already counts `digest`, and whether `repo` is new to it."""
    known = conn.execute(
        "SELECT 1 FROM quota_objects WHERE pattern = ? AND digest = ?", (pattern, digest)
    ).fetchone() is not None
    new_repo = conn.execute(
        "SELECT 1 FROM quota_repos WHERE pattern = ? AND repo = ?", (pattern, repo)
    ).fetchone() is None
    return known, new_repo


def _count_link(conn: sqlite3.Connection, pattern: str, repo: str, digest: str,
                size: int) -> None:
    known, new_repo = _novelty(conn, pattern, repo, digest)
    conn.execute(
        "INSERT INTO quota_objects (pattern, digest, size, links) VALUES (?, ?, ?, 1)"
        " ON CONFLICT(pattern, digest) DO UPDATE SET links = links + 1",
        (pattern, digest, size),
    )
    conn.execute(
        "INSERT INTO quota_repos (pattern, repo, links) VALUES (?, ?, 1)"
        " ON CONFLICT(pattern, repo) DO UPDATE SET links = links + 1",
        (pattern, repo),
    )
    conn.execute(
        "UPDATE quotas SET used_bytes = used_bytes + ?, used_repos = used_repos + ?"
        " WHERE pattern = ?",
        (0 if known else size, 1 if new_repo else 0, pattern),
    )


def release(conn: sqlite3.Connection, repo: str, digest: str) -> None:
    """Uncount a link of `repo` to `digest` that was just removed."""
    for quota in quotas_covering(conn, repo):
        pattern = quota.pattern
        row = conn.execute(
            "SELECT size FROM quota_objects WHERE pattern = ? AND digest = ?",
            (pattern, digest),
        ).fetchone()
        if row is None:
            continue
        if _unlink(conn, "quota_objects", "digest", pattern, digest):
            conn.execute("UPDATE quotas SET used_bytes = used_bytes - ? WHERE pattern = ?",
                         (row[0], pattern))
        if _unlink(conn, "quota_repos", "repo", pattern, repo):
            conn.execute("UPDATE quotas SET used_repos = used_repos - 1 WHERE pattern = ?",
                         (pattern,))


def _unlink(conn: sqlite3.Connection, table: str, column: str, pattern: str,
            key: str) -> bool:
    """Count one link fewer on a counter row; True when that was its last (the row goes).
    A missing row is no link: nothing to uncount."""
    where = f"WHERE pattern = ? AND {column} = ?"
    row = conn.execute(f"SELECT links FROM {table} {where}", (pattern, key)).fetchone()
    if row is None:
        return False
    if row[0] > 1:
        conn.execute(f"UPDATE {table} SET links = links - 1 {where}", (pattern, key))
        return False
    conn.execute(f"DELETE FROM {table} {where}", (pattern, key))
    return True


def set_quota(conn: sqlite3.Connection, pattern: str, max_bytes: int | None,
              max_repos: int | None) -> None:
    """Make or change a quota. A new one counts what its repositories already hold
    (one scan, here and never again); a changed one keeps its counters. A quota set
    below its usage refuses further growth and takes nothing away."""
    cursor = conn.execute(
        "UPDATE quotas SET max_bytes = ?, max_repos = ? WHERE pattern = ?",
        (max_bytes, max_repos, pattern),
    )
    if cursor.rowcount:
        return
    conn.execute(
        "INSERT INTO quotas (pattern, max_bytes, max_repos, used_bytes, used_repos)"
        " VALUES (?, ?, ?, 0, 0)",
        (pattern, max_bytes, max_repos),
    )
    links = conn.execute(
        "SELECT r.repo, r.digest, b.size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest"
        " UNION ALL SELECT repo, digest, length(body) FROM manifests"
    ).fetchall()
    for repo, digest, size in links:
        if covers(pattern, repo):
            _count_link(conn, pattern, repo, digest, size)


def remove_quota(conn: sqlite3.Connection, pattern: str) -> bool:
    cursor = conn.execute("DELETE FROM quotas WHERE pattern = ?", (pattern,))
    conn.execute("DELETE FROM quota_objects WHERE pattern = ?", (pattern,))
    conn.execute("DELETE FROM quota_repos WHERE pattern = ?", (pattern,))
    return bool(cursor.rowcount)
