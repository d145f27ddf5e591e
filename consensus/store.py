"""The replicated metadata's SQLite tables on this node's disk, and the reads on them.

Only the state machine (`state.py`) writes; everything else reads through
`Queries`. The applied log index lives in the same database and changes in
the same transaction as the state it produced, so a restart resumes exactly
where the last applied command left off.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from consensus import quotas
from consensus.garbage import Garbage, select_garbage
from consensus.repo_patterns import covers
from consensus.retention import (
    Deletions,
    ManifestAt,
    RetentionPolicy,
    TaggedAt,
    new_regex_cache,
    plan_retention,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunks BLOB NOT NULL              -- concatenated 32-byte BLAKE3 ids
);
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    linked_at INTEGER NOT NULL DEFAULT 0,  -- Unix seconds of the last push or mount (GC grace)
    PRIMARY KEY (repo, digest)
);
CREATE TABLE IF NOT EXISTS manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    body BLOB NOT NULL,
    subject TEXT,
    artifact_type TEXT,
    annotations TEXT,                 -- JSON object or NULL
    pushed_at INTEGER NOT NULL DEFAULT 0,  -- Unix seconds of its first push (0: unknown)
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS manifests_by_subject ON manifests (repo, subject)
    WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_refs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,             -- the referencing manifest
    target TEXT NOT NULL,             -- a blob or child manifest it names
    PRIMARY KEY (repo, digest, target)
);
CREATE INDEX IF NOT EXISTS manifest_refs_by_target ON manifest_refs (repo, target);
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    pushed_at INTEGER NOT NULL DEFAULT 0,  -- Unix seconds of its last push (0: unknown)
    PRIMARY KEY (repo, tag)
);
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (repo, digest);
CREATE INDEX IF NOT EXISTS tags_in_order ON tags (repo, lower(tag), tag);
CREATE TABLE IF NOT EXISTS members (
    node_id TEXT PRIMARY KEY,
    raft TEXT NOT NULL,
    http TEXT NOT NULL,
    zone TEXT NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0  -- 1: placement gives it no chunk (being drained)
);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    robot INTEGER NOT NULL,           -- 1: a robot, whose secret is a token
    secret_hash TEXT NOT NULL,        -- argon2 / bcrypt (users), sha256:HEX (robots)
    expires_at INTEGER                -- Unix seconds, or NULL: never
);
CREATE TABLE IF NOT EXISTS grants (
    principal TEXT NOT NULL,
    pattern TEXT NOT NULL,            -- a repository name or glob (team/*, *)
    role TEXT NOT NULL,
    PRIMARY KEY (principal, pattern)
);
CREATE TABLE IF NOT EXISTS public_repos (
    pattern TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    private_pem BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retire_at INTEGER                 -- NULL: the key tokens are signed with now
);
CREATE TABLE IF NOT EXISTS gc_runs (
    epoch INTEGER PRIMARY KEY,        -- meta gc_epoch after the run
    command_id TEXT NOT NULL,
    now INTEGER NOT NULL,             -- the command's time (Unix seconds)
    grace_seconds INTEGER NOT NULL,
    links INTEGER NOT NULL,           -- repository blob links removed
    blobs INTEGER NOT NULL,           -- recipes removed
    bytes INTEGER NOT NULL            -- their total size
);
CREATE TABLE IF NOT EXISTS retention_policies (
    pattern TEXT PRIMARY KEY,         -- a repository name or glob
    keep_last INTEGER,                -- NULL: rule not set
    older_than INTEGER,               -- seconds
    keep TEXT NOT NULL,               -- JSON list of tag regexes never deleted
    only TEXT NOT NULL,               -- JSON list of tag regexes considered ([]: all)
    untagged_older_than INTEGER       -- seconds
);
CREATE TABLE IF NOT EXISTS immutable_tags (
    pattern TEXT PRIMARY KEY,         -- a repository name or glob
    exclude TEXT NOT NULL             -- JSON list of tag regexes that may still move
);
CREATE TABLE IF NOT EXISTS quotas (
    pattern TEXT PRIMARY KEY,         -- a namespace (team) or a glob (team-*)
    max_bytes INTEGER,                -- NULL: no cap
    max_repos INTEGER,                -- NULL: no cap
    used_bytes INTEGER NOT NULL,      -- counters, moved with every link (consensus/quotas.py)
    used_repos INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quota_objects (
    pattern TEXT NOT NULL,
    digest TEXT NOT NULL,             -- a blob or manifest counted once in the quota
    size INTEGER NOT NULL,
    links INTEGER NOT NULL,           -- how many of the quota's repositories link it
    PRIMARY KEY (pattern, digest)
);
CREATE TABLE IF NOT EXISTS quota_repos (
    pattern TEXT NOT NULL,
    repo TEXT NOT NULL,
    links INTEGER NOT NULL,           -- blob links and manifests of the repository
    PRIMARY KEY (pattern, repo)
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,              -- command id, so a retried proposal applies once
    log_index INTEGER NOT NULL,
    result TEXT NOT NULL
);
"""


# Tables a snapshot carries, in the order they are copied.
TABLES = (
    "meta", "blobs", "repo_blobs", "manifests", "manifest_refs", "tags", "members",
    "accounts", "grants", "public_repos", "signing_keys", "gc_runs", "retention_policies",
    "immutable_tags", "quotas", "quota_objects", "quota_repos", "requests",
)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the state database.

    `synchronous=NORMAL` is enough: the Raft log is fsynced before an entry is
    applied, and the applied index moves in the same transaction as the state,
    so a transaction lost in a crash is simply applied again from the log.
    """
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        migrate(conn)
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def _columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older version up to SCHEMA (CREATE IF NOT EXISTS
    adds missing tables, not missing columns)."""
    if "draining" not in _columns(conn, "members"):
        conn.execute("ALTER TABLE members ADD COLUMN draining INTEGER NOT NULL DEFAULT 0")
    if "linked_at" not in _columns(conn, "repo_blobs"):
        # Links made before GC existed count as old: unreferenced ones are collected.
        conn.execute("ALTER TABLE repo_blobs ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS repo_blobs_by_digest ON repo_blobs (digest)")
    for table in ("tags", "manifests"):
        if "pushed_at" not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN pushed_at INTEGER NOT NULL DEFAULT 0")


def export_snapshot(source: Path, target: Path) -> int:
    """Copy the whole state at `source`, consistently, into a new database file at
    `target`; returns the applied index the copy holds.

    The copy is taken through a connection of its own, in one step (one read
    transaction), so it never sees half of a command and the writer goes on
    applying meanwhile.
    """
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    out = sqlite3.connect(target)
    try:
        conn.backup(out)
        row = out.execute("SELECT value FROM meta WHERE key = 'applied'").fetchone()
        return row[0] if row else 0
    finally:
        out.close()
        conn.close()


def import_snapshot(conn: sqlite3.Connection, source: Path) -> None:
    """Replace the whole state by the snapshot at `source`, in one transaction.

    Copying rows (instead of swapping files) keeps every open connection
    valid and makes the switch atomic: readers see the old state or the new.
    """
    conn.execute("ATTACH DATABASE ? AS snap", (str(source),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in TABLES:
                # By name: a snapshot an older version wrote may lack a newer column,
                # which then takes its default.
                ours = set(_columns(conn, table))
                names = ", ".join(c for c in _columns(conn, table, "snap") if c in ours)
                conn.execute(f"DELETE FROM main.{table}")
                if not names:  # a table the snapshot's version did not have yet
                    continue
                conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM snap.{table}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH DATABASE snap")


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    raft: str
    http: str
    zone: str
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to rebuild a blob: its size and the BLAKE3 ids of its chunks, in order."""

    digest: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    repo: str
    digest: str
    media_type: str
    body: bytes
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Referrer:
    """What the referrers listing says of one manifest with a `subject`."""

    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class GcRun:
    """What one garbage collection removed from the state."""

    epoch: int
    command_id: str
    now: int
    grace_seconds: int
    links: int
    blobs: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    robot: bool
    secret_hash: str
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class Grant:
    principal: str
    pattern: str
    role: str


@dataclass(frozen=True, slots=True)
class ImmutableTags:
    pattern: str
    exclude: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_pem: bytes
    created_at: int
    retire_at: int | None  # None: the current key


def pack_chunk_ids(ids: list[str] | tuple[str, ...]) -> bytes:
    return b"".join(bytes.fromhex(i) for i in ids)


def unpack_chunk_ids(packed: bytes) -> tuple[str, ...]:
    return tuple(packed[i : i + 32].hex() for i in range(0, len(packed), 32))


def _recipe(row: tuple | None) -> Recipe | None:
    if row is None:
        return None
    digest, size, chunk_size, chunks = row
    return Recipe(digest, size, chunk_size, unpack_chunk_ids(chunks))


def _annotations(column: str | None) -> dict[str, str] | None:
    """The `annotations` column (a JSON object, or NULL) as the records carry it."""
    return json.loads(column) if column else None


def _manifest(row: tuple | None) -> ManifestRecord | None:
    if row is None:
        return None
    repo, digest, media_type, body, subject, artifact_type, annotations = row
    return ManifestRecord(
        repo,
        digest,
        media_type,
        bytes(body),
        subject,
        artifact_type,
        _annotations(annotations),
    )


_MANIFEST_COLUMNS = "repo, digest, media_type, body, subject, artifact_type, annotations"


class Queries:
    """Read-only questions on the local copy of the state."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def applied_index(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'applied'").fetchone()
        return row[0] if row else 0

    def blob(self, digest: str) -> Recipe | None:
        """A blob anywhere in the registry (for cross-repository mounts)."""
        return _recipe(
            self.conn.execute(
                "SELECT digest, size, chunk_size, chunks FROM blobs WHERE digest = ?", (digest,)
            ).fetchone()
        )

    def repo_blob(self, repo: str, digest: str) -> Recipe | None:
        """A blob that `repo` may serve."""
        return _recipe(
            self.conn.execute(
                "SELECT b.digest, b.size, b.chunk_size, b.chunks FROM repo_blobs r"
                " JOIN blobs b ON b.digest = r.digest WHERE r.repo = ? AND r.digest = ?",
                (repo, digest),
            ).fetchone()
        )

    def manifest(self, repo: str, digest: str) -> ManifestRecord | None:
        return _manifest(
            self.conn.execute(
                f"SELECT {_MANIFEST_COLUMNS} FROM manifests WHERE repo = ? AND digest = ?",
                (repo, digest),
            ).fetchone()
        )

    def tag(self, repo: str, tag: str) -> str | None:
        row = self.conn.execute(
            "SELECT digest FROM tags WHERE repo = ? AND tag = ?", (repo, tag)
        ).fetchone()
        return row[0] if row else None

    def repository_exists(self, repo: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM manifests WHERE repo = ? UNION ALL"
                " SELECT 1 FROM repo_blobs WHERE repo = ? LIMIT 1",
                (repo, repo),
            ).fetchone()
            is not None
        )

    def tags(self, repo: str, *, last: str | None, limit: int) -> list[str]:
        """Tags in the spec's order (case-insensitive, ties broken by case), after `last`."""
        if last is None:
            rows = self.conn.execute(
                "SELECT tag FROM tags WHERE repo = ? ORDER BY lower(tag), tag LIMIT ?",
                (repo, limit),
            )
        else:
            rows = self.conn.execute(
                "SELECT tag FROM tags WHERE repo = ? AND (lower(tag), tag) > (lower(?), ?)"
                " ORDER BY lower(tag), tag LIMIT ?",
                (repo, last, last, limit),
            )
        return [r[0] for r in rows]

    def repositories(self, *, last: str | None, limit: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT repo FROM (SELECT repo FROM manifests UNION SELECT repo FROM repo_blobs)"
            " WHERE repo > ? ORDER BY repo LIMIT ?",
            (last or "", limit),
        )
        return [r[0] for r in rows]

    def referrers(
        self, repo: str, subject: str, *, artifact_type: str | None = None,
        last: str | None = None, limit: int,
    ) -> list[Referrer]:
        """Manifests in `repo` whose `subject` is `subject`, by digest, after `last`.

        Only what a descriptor needs is read: a subject with thousands of
        signatures and SBOMs does not load their bodies.
        """
        sql = (
            "SELECT digest, media_type, length(body), artifact_type, annotations"
            " FROM manifests WHERE repo = ? AND subject = ?"
        )
        params: list[str | int] = [repo, subject]
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            params.append(artifact_type)
        if last is not None:
            sql += " AND digest > ?"
            params.append(last)
        rows = self.conn.execute(sql + " ORDER BY digest LIMIT ?", (*params, limit))
        return [
            Referrer(digest, media_type, size, artifact_type, _annotations(annotations))
            for digest, media_type, size, artifact_type, annotations in rows
        ]

    def members(self) -> list[Member]:
        rows = self.conn.execute(
            "SELECT node_id, raft, http, zone, draining FROM members ORDER BY node_id"
        )
        return [Member(n, r, h, z, bool(d)) for n, r, h, z, d in rows]

    def draining(self) -> set[str]:
        """The members being drained."""
        rows = self.conn.execute("SELECT node_id FROM members WHERE draining != 0")
        return {r[0] for r in rows}

    def tags_of(self, repo: str, digest: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY tag", (repo, digest)
        )
        return [r[0] for r in rows]

    def blob_chunk_lists(self) -> Iterator[tuple[str, ...]]:
        """The chunk ids of every recorded blob, one tuple a blob, in no set order."""
        for (packed,) in self.conn.execute("SELECT chunks FROM blobs"):
            yield unpack_chunk_ids(packed)

    # -- garbage collection ---------------------------------------------------

    def gc_epoch(self) -> int:
        """How many garbage collections this state has applied."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'gc_epoch'").fetchone()
        return row[0] if row else 0

    def gc_runs(self, limit: int = 10) -> list[GcRun]:
        """The latest garbage collections, newest first."""
        rows = self.conn.execute(
            "SELECT epoch, command_id, now, grace_seconds, links, blobs, bytes FROM gc_runs"
            " ORDER BY epoch DESC LIMIT ?", (limit,)
        )
        return [GcRun(*row) for row in rows]

    def gc_run_of(self, command_id: str) -> GcRun | None:
        row = self.conn.execute(
            "SELECT epoch, command_id, now, grace_seconds, links, blobs, bytes FROM gc_runs"
            " WHERE command_id = ?", (command_id,)
        ).fetchone()
        return GcRun(*row) if row else None

    def garbage(self, now: int, grace_seconds: int) -> tuple[Garbage, set[str]]:
        """What `CollectGarbage(now, grace_seconds)` would remove now (a dry run), and the
        chunk ids that no recipe left after it uses. Blocking and possibly long."""
        self.conn.execute("BEGIN")  # one read transaction: every query sees one state
        try:
            garbage = select_garbage(self.conn, now, grace_seconds)
            doomed = {blob[0] for blob in garbage.blobs}
            freed = {c for *_, packed in garbage.blobs for c in unpack_chunk_ids(packed)}
            for digest, packed in self.conn.execute("SELECT digest, chunks FROM blobs"):
                if digest not in doomed:
                    freed.difference_update(unpack_chunk_ids(packed))
            return garbage, freed
        finally:
            self.conn.execute("COMMIT")

    # -- access control -------------------------------------------------------

    def access_version(self) -> int:
        """Changes whenever an account, grant, public pattern or signing key does: what
        caches of the access tables compare against."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'access'").fetchone()
        return row[0] if row else 0

    def account(self, name: str) -> Account | None:
        row = self.conn.execute(
            "SELECT name, robot, secret_hash, expires_at FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        return Account(row[0], bool(row[1]), row[2], row[3]) if row else None

    def accounts(self) -> list[Account]:
        rows = self.conn.execute(
            "SELECT name, robot, secret_hash, expires_at FROM accounts ORDER BY name"
        )
        return [Account(n, bool(r), h, e) for n, r, h, e in rows]

    def grants(self) -> list[Grant]:
        rows = self.conn.execute(
            "SELECT principal, pattern, role FROM grants ORDER BY principal, pattern"
        )
        return [Grant(*row) for row in rows]

    def public_patterns(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT pattern FROM public_repos ORDER BY 1")]

    def signing_keys(self) -> list[SigningKey]:
        """Every key that still verifies tokens, the current one (retire_at NULL) first."""
        rows = self.conn.execute(
            "SELECT kid, private_pem, created_at, retire_at FROM signing_keys"
            " ORDER BY retire_at IS NOT NULL, created_at DESC"
        )
        return [SigningKey(k, bytes(p), c, r) for k, p, c, r in rows]

    # -- lifecycle: retention policies and immutable tags ---------------------

    def retention_policies(self) -> list[RetentionPolicy]:
        rows = self.conn.execute(
            "SELECT pattern, keep_last, older_than, keep, only, untagged_older_than"
            " FROM retention_policies ORDER BY pattern"
        )
        return [
            RetentionPolicy(p, n, d, tuple(json.loads(k)), tuple(json.loads(o)), u)
            for p, n, d, k, o, u in rows
        ]

    def immutable_tag_rules(self) -> list[ImmutableTags]:
        rows = self.conn.execute("SELECT pattern, exclude FROM immutable_tags ORDER BY pattern")
        return [ImmutableTags(p, tuple(json.loads(e))) for p, e in rows]

    def immutable_rule_for(self, repo: str, tag: str) -> ImmutableTags | None:
        """The first rule (by pattern) that makes `tag` of `repo` immutable, if any."""
        regexes = new_regex_cache()
        for rule in self.immutable_tag_rules():
            if covers(rule.pattern, repo) and not regexes.finds(rule.exclude, tag):
                return rule
        return None

    def retention_plan(
        self, now: int, policies: list[RetentionPolicy] | None = None
    ) -> list[tuple[str, Deletions]]:
        """What the retention policies (all of them, or `policies`) delete at `now`, by
        repository in name order. Every policy that covers a repository applies to
        it: a tag or manifest stays only if each of them keeps it."""
        policies = self.retention_policies() if policies is None else policies
        if not policies:
            return []
        regexes = new_regex_cache()
        plan = []
        repos = self.conn.execute(
            "SELECT repo FROM manifests UNION SELECT repo FROM tags ORDER BY repo"
        )
        for (repo,) in repos.fetchall():
            mine = [p for p in policies if covers(p.pattern, repo)]
            if not mine:
                continue
            tags = [TaggedAt(t, d, a) for t, d, a in self.conn.execute(
                "SELECT tag, digest, pushed_at FROM tags WHERE repo = ?", (repo,))]
            manifests = [ManifestAt(d, a, bool(r)) for d, a, r in self.conn.execute(
                "SELECT m.digest, m.pushed_at,"
                " EXISTS (SELECT 1 FROM manifest_refs f WHERE f.repo = m.repo"
                "         AND f.target = m.digest AND f.digest != m.digest)"
                " OR EXISTS (SELECT 1 FROM manifests s WHERE s.repo = m.repo"
                "            AND s.digest = m.subject)"
                " FROM manifests m WHERE m.repo = ?", (repo,))]
            doomed_tags: set[str] = set()
            doomed_manifests: set[str] = set()
            for policy in mine:
                found = plan_retention(policy, tags, manifests, now, regexes=regexes)
                doomed_tags.update(found.tags)
                doomed_manifests.update(found.manifests)
            if doomed_tags or doomed_manifests:
                plan.append((repo, Deletions(tuple(sorted(doomed_tags)),
                                             tuple(sorted(doomed_manifests)))))
        return plan

    def command_result(self, command_id: str) -> str | None:
        """The detail of an applied command's result (e.g. what ApplyRetention deleted),
        while the state machine still remembers the command."""
        row = self.conn.execute(
            "SELECT result FROM requests WHERE id = ?", (command_id,)
        ).fetchone()
        return json.loads(row[0])[1] if row else None
    # -- quotas ---------------------------------------------------------------

    def quotas(self) -> list[quotas.Quota]:
        """Every quota with its usage, by pattern."""
        return quotas.all_quotas(self.conn)

    def quotas_covering(self, repo: str) -> list[quotas.Quota]:
        return quotas.quotas_covering(self.conn, repo)

    def quota_counts(self, pattern: str, digest: str) -> bool:
        """Whether the quota on `pattern` already counts `digest` (linking it again is free)."""
        return self.conn.execute(
            "SELECT 1 FROM quota_objects WHERE pattern = ? AND digest = ?", (pattern, digest)
        ).fetchone() is not None
