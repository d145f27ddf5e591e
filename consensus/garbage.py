"""What a garbage collection removes from the replicated state: one pure selection.

The state machine applies `CollectGarbage(now, grace_seconds)` by deleting
exactly what `select_garbage` names, and a dry run asks the same function
through a read-only connection, so what an operator is shown is what a run
at the same log position would remove. A blob link (repo_blobs) is garbage
when no manifest of its repository references the blob (manifest_refs:
config, layers, index children; a referrer is a manifest with refs of its
own) and it was made before `now - grace_seconds`; a recipe (blobs) is
garbage once every link to it is, or none is left. The selection depends on
the tables and the command only (no clock), and is listed in a fixed order,
so every node removes the same rows and reports the same counts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# How many gc runs the state keeps a record of (for `flotilla gc status`).
RUNS_KEPT = 100

# A link is kept while it is referenced, or young: the same predicate in both queries.
# linked_at 0 is a link older than link times; a collection stamps it with its `now`
# first (consensus/state.py), so a dry run counts it young as well.
_LINK_KEPT = (
    "(r.linked_at = 0 OR r.linked_at >= :cutoff OR EXISTS (SELECT 1 FROM manifest_refs m"
    " WHERE m.repo = r.repo AND m.target = r.digest))"
)


@dataclass(frozen=True, slots=True)
class Garbage:
    """The links and recipes one collection removes, in a fixed order."""

    links: tuple[tuple[str, str], ...]  # (repo, digest)
    blobs: tuple[tuple[str, int, int, bytes], ...]  # (digest, size, chunk size, packed ids)

    @property
    def bytes(self) -> int:
        return sum(blob[1] for blob in self.blobs)


def select_garbage(conn: sqlite3.Connection, now: int, grace_seconds: int) -> Garbage:
    """What `CollectGarbage(now, grace_seconds)` removes, read from `conn`'s tables."""
    cutoff = {"cutoff": now - grace_seconds}
    links = conn.execute(
        f"SELECT r.repo, r.digest FROM repo_blobs r WHERE NOT {_LINK_KEPT}"
        " ORDER BY r.repo, r.digest",
        cutoff,
    ).fetchall()
    blobs = conn.execute(
        "SELECT b.digest, b.size, b.chunk_size, b.chunks FROM blobs b WHERE NOT EXISTS"
        f" (SELECT 1 FROM repo_blobs r WHERE r.digest = b.digest AND {_LINK_KEPT})"
        " ORDER BY b.digest",
        cutoff,
    ).fetchall()
    return Garbage(
        tuple((repo, digest) for repo, digest in links),
        tuple((digest, size, chunk_size, bytes(chunks))
              for digest, size, chunk_size, chunks in blobs),
    )


def remove_garbage(conn: sqlite3.Connection, garbage: Garbage) -> None:
    """Delete what `select_garbage` named (inside the state machine's transaction)."""
    conn.executemany("DELETE FROM repo_blobs WHERE repo = ? AND digest = ?", garbage.links)
    conn.executemany("DELETE FROM blobs WHERE digest = ?", [(blob[0],) for blob in garbage.blobs])
