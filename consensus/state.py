"""The state machine: applies one committed command to the SQLite tables.

Deterministic by construction: the result depends only on the tables and
the command, so every node that applies the same log holds the same state.
Each command runs in one transaction together with the new applied index;
a command that was already applied (same id, e.g. a retried proposal) is
answered with its first result and changes nothing.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from dataclasses import dataclass

from consensus import commands as c
from consensus import quotas
from consensus.garbage import RUNS_KEPT, remove_garbage, select_garbage
from consensus.store import Queries, pack_chunk_ids


class Refusal(enum.Enum):
    """Why the state machine refused a command.

    The values are what the `requests` table stores as a command's first
    result, so they stay as they are; what a client sees for each is decided
    in `node/api/errors.py`, not here.
    """

    BLOB_MISSING = "BLOB_UNKNOWN"  # mount or unlink of a blob not held (or not linked)
    REFERENCED_BLOB_MISSING = "MANIFEST_BLOB_UNKNOWN"  # a manifest names an unlinked blob
    MANIFEST_MISSING = "MANIFEST_UNKNOWN"  # an unknown manifest, child manifest or tag
    COMMAND_INVALID = "COMMAND_INVALID"  # the entry is not a well-formed command
    MEMBER_MISSING = "MEMBER_UNKNOWN"  # a drain of a node the member list does not hold
    ACCOUNT_EXISTS = "ACCOUNT_EXISTS"  # a create-only account whose name is taken
    ACCOUNT_MISSING = "ACCOUNT_UNKNOWN"  # a grant to, or removal of, an unknown account
    GRANT_MISSING = "GRANT_UNKNOWN"  # a revocation of a grant that does not exist
    TAG_IMMUTABLE = "TAG_IMMUTABLE"  # a push that would move a tag an immutable rule holds
    POLICY_MISSING = "POLICY_UNKNOWN"  # removal of a retention policy or rule not set
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # a link that would pass a namespace's quota
    QUOTA_MISSING = "QUOTA_UNKNOWN"  # a removal of a quota that does not exist


@dataclass(frozen=True, slots=True)
class Result:
    """What applying a command produced: a refusal with its detail, or neither."""

    refusal: Refusal | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None

    def encode(self) -> str:
        return json.dumps([self.refusal.value if self.refusal else None, self.detail])

    @classmethod
    def decode(cls, text: str) -> Result:
        refusal, detail = json.loads(text)
        return cls(Refusal(refusal) if refusal is not None else None, detail)


OK = Result()

# A retried proposal is recognised while its first application is at most
# this many entries old; pruning at fixed indexes keeps every node identical.
REQUEST_MEMORY = 100_000
REQUEST_PRUNE_EVERY = 1024


class StateMachine:
    """Applies commands in log order; owns the only writing connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @property
    def applied_index(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'applied'").fetchone()
        return row[0] if row else 0

    def apply(self, index: int, data: bytes | None) -> Result:
        """Apply the command at log `index` (None: an entry with no command)."""
        return self.apply_batch([(index, data)])[0][1]

    def apply_batch(
        self, entries: list[tuple[int, bytes | None]]
    ) -> list[tuple[str | None, Result]]:
        """Apply consecutive log entries in one transaction; returns (command id, result)
        for each. Entries at or below the applied index are skipped (None, OK):
        after a crash the log may hand them over again."""
        conn = self.conn
        applied = self.applied_index
        out: list[tuple[str | None, Result]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, data in entries:
                if index <= applied:
                    out.append((None, OK))
                    continue
                out.append(self._apply_entry(index, data))
                applied = index
                if index % REQUEST_PRUNE_EVERY == 0:
                    conn.execute(
                        "DELETE FROM requests WHERE log_index < ?", (index - REQUEST_MEMORY,)
                    )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('applied', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (applied,),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite has already rolled back after SQLITE_FULL
                conn.execute("ROLLBACK")
            raise
        return out

    def _apply_entry(self, index: int, data: bytes | None) -> tuple[str | None, Result]:
        if data is None:
            return None, OK
        try:
            command = c.decode(data)
        except c.CommandInvalid as exc:
            return None, Result(Refusal.COMMAND_INVALID, str(exc))
        seen = self.conn.execute(
            "SELECT result FROM requests WHERE id = ?", (command.id,)
        ).fetchone()
        if seen is not None:
            return command.id, Result.decode(seen[0])
        result = self._apply_atomically(command)
        self.conn.execute(
            "INSERT INTO requests (id, log_index, result) VALUES (?, ?, ?)",
            (command.id, index, result.encode()),
        )
        return command.id, result

    def _apply_atomically(self, command: c.Command) -> Result:
        """Apply one decoded command, all or nothing.

        Decoding already refused every command of the wrong shape; should a
        handler still fail on what the command holds, that failure is the
        same on every node, so it becomes the same refusal everywhere instead
        of an exception that would stop each node at this entry after every
        restart. Failures of this node's own disk (sqlite3.OperationalError)
        are not the command's: they still propagate and roll the batch back.
        """
        self.conn.execute("SAVEPOINT command")
        try:
            result = self._apply(command)
        except (ValueError, TypeError, OverflowError, sqlite3.IntegrityError) as exc:
            self.conn.execute("ROLLBACK TO command")
            result = Result(Refusal.COMMAND_INVALID, f"{command.kind}: {type(exc).__name__}")
        self.conn.execute("RELEASE command")
        return result

    def _apply(self, command: c.Command) -> Result:
        handler = getattr(self, f"_apply_{command.kind}")
        return handler(command)

    def _apply_put_blob(self, cmd: c.PutBlob) -> Result:
        # The quota is checked before anything is written: a refused blob leaves no
        # recipe behind (its chunks are left to the abandoned-chunk cleanup).
        held = self.conn.execute("SELECT size FROM blobs WHERE digest = ?", (cmd.digest,))
        row = held.fetchone()
        refusal = self._link(cmd.repo, cmd.digest, row[0] if row else cmd.size, cmd.now)
        if refusal is not None:
            return refusal
        self.conn.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, chunk_size, chunks) VALUES (?, ?, ?, ?)",
            (cmd.digest, cmd.size, cmd.chunk_size, pack_chunk_ids(cmd.chunks)),
        )
        return OK

    def _apply_mount_blob(self, cmd: c.MountBlob) -> Result:
        row = self.conn.execute(
            "SELECT size FROM blobs WHERE digest = ?", (cmd.digest,)
        ).fetchone()
        if row is None:
            return Result(Refusal.BLOB_MISSING, cmd.digest)
        return self._link(cmd.repo, cmd.digest, row[0], cmd.now) or OK

    def _link(self, repo: str, digest: str, size: int, now: int) -> Result | None:
        """Link `repo` to a blob of `size` bytes at `now`, counted in its quotas; the
        refusal when a quota would be passed (then nothing is written). Linking again (a
        push or mount of a blob already linked) starts its GC grace anew: the client is
        about to push a manifest that names it."""
        linked = self.conn.execute(
            "SELECT 1 FROM repo_blobs WHERE repo = ? AND digest = ?", (repo, digest)
        ).fetchone()
        if linked:
            self.conn.execute(
                "UPDATE repo_blobs SET linked_at = max(linked_at, ?)"
                " WHERE repo = ? AND digest = ?", (now, repo, digest),
            )
            return None
        over = quotas.charge(self.conn, repo, digest, size)
        if over is not None:
            return Result(Refusal.QUOTA_EXCEEDED, over)
        self.conn.execute("INSERT INTO repo_blobs (repo, digest, linked_at) VALUES (?, ?, ?)",
                          (repo, digest, now))
        return None

    def _apply_unlink_blob(self, cmd: c.UnlinkBlob) -> Result:
        cursor = self.conn.execute(
            "DELETE FROM repo_blobs WHERE repo = ? AND digest = ?", (cmd.repo, cmd.digest)
        )
        if not cursor.rowcount:
            return Result(Refusal.BLOB_MISSING, cmd.digest)
        quotas.release(self.conn, cmd.repo, cmd.digest)
        return OK

    def _apply_put_manifest(self, cmd: c.PutManifest) -> Result:
        conn = self.conn
        if cmd.tag is not None:
            # Checked here, at apply time, so two pushes racing through two nodes
            # cannot both move the tag: the second finds the first's digest.
            current = conn.execute(
                "SELECT digest FROM tags WHERE repo = ? AND tag = ?", (cmd.repo, cmd.tag)
            ).fetchone()
            if current is not None and current[0] != cmd.digest:
                rule = Queries(conn).immutable_rule_for(cmd.repo, cmd.tag)
                if rule is not None:
                    return Result(Refusal.TAG_IMMUTABLE, json.dumps(
                        {"tag": cmd.tag, "digest": current[0], "rule": rule.pattern,
                         "exclude": list(rule.exclude)}))
        for blob in cmd.blobs:
            row = conn.execute(
                "SELECT 1 FROM repo_blobs WHERE repo = ? AND digest = ?", (cmd.repo, blob)
            ).fetchone()
            if row is None:
                return Result(Refusal.REFERENCED_BLOB_MISSING, blob)
        for child in cmd.manifests:
            row = conn.execute(
                "SELECT 1 FROM manifests WHERE repo = ? AND digest = ?", (cmd.repo, child)
            ).fetchone()
            if row is None:
                return Result(Refusal.MANIFEST_MISSING, child)
        stored = conn.execute(
            "SELECT 1 FROM manifests WHERE repo = ? AND digest = ?", (cmd.repo, cmd.digest)
        ).fetchone()
        if stored is None:
            over = quotas.charge(conn, cmd.repo, cmd.digest, len(cmd.body))
            if over is not None:
                return Result(Refusal.QUOTA_EXCEEDED, over)
        conn.execute(
            "INSERT INTO manifests"
            " (repo, digest, media_type, body, subject, artifact_type, annotations, pushed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, digest) DO NOTHING",
            (
                cmd.repo,
                cmd.digest,
                cmd.media_type,
                cmd.body,
                cmd.subject,
                cmd.artifact_type,
                json.dumps(cmd.annotations, sort_keys=True) if cmd.annotations else None,
                cmd.now,
            ),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO manifest_refs (repo, digest, target) VALUES (?, ?, ?)",
            [(cmd.repo, cmd.digest, t) for t in (*cmd.blobs, *cmd.manifests)],
        )
        if cmd.tag is not None:
            conn.execute(
                "INSERT INTO tags (repo, tag, digest, pushed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest,"
                " pushed_at = excluded.pushed_at",
                (cmd.repo, cmd.tag, cmd.digest, cmd.now),
            )
        return OK

    def _apply_delete_manifest(self, cmd: c.DeleteManifest) -> Result:
        if not self._delete_manifest(cmd.repo, cmd.digest):
            return Result(Refusal.MANIFEST_MISSING, cmd.digest)
        return OK

    def _delete_manifest(self, repo: str, digest: str) -> bool:
        """Remove a manifest, its tags and its references; False if it was not there."""
        conn = self.conn
        cursor = conn.execute("DELETE FROM manifests WHERE repo = ? AND digest = ?", (repo, digest))
        if not cursor.rowcount:
            return False
        quotas.release(conn, repo, digest)
        conn.execute("DELETE FROM tags WHERE repo = ? AND digest = ?", (repo, digest))
        conn.execute("DELETE FROM manifest_refs WHERE repo = ? AND digest = ?", (repo, digest))
        return True

    def _apply_delete_tag(self, cmd: c.DeleteTag) -> Result:
        cursor = self.conn.execute(
            "DELETE FROM tags WHERE repo = ? AND tag = ?", (cmd.repo, cmd.tag)
        )
        return OK if cursor.rowcount else Result(Refusal.MANIFEST_MISSING, cmd.tag)

    def _apply_register_member(self, cmd: c.RegisterMember) -> Result:
        self.conn.execute(
            "INSERT INTO members (node_id, raft, http, zone) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(node_id) DO UPDATE SET raft = excluded.raft, http = excluded.http,"
            " zone = excluded.zone",
            (cmd.node_id, cmd.raft, cmd.http, cmd.zone),
        )
        return OK

    def _apply_unregister_member(self, cmd: c.UnregisterMember) -> Result:
        # The row goes, and its draining flag with it: a node that comes back is new.
        self.conn.execute("DELETE FROM members WHERE node_id = ?", (cmd.node_id,))
        return OK

    def _apply_drain_member(self, cmd: c.DrainMember) -> Result:
        cursor = self.conn.execute(
            "UPDATE members SET draining = ? WHERE node_id = ?", (int(cmd.draining), cmd.node_id)
        )
        return OK if cursor.rowcount else Result(Refusal.MEMBER_MISSING, cmd.node_id)

    def _apply_collect_garbage(self, cmd: c.CollectGarbage) -> Result:
        """Remove what `select_garbage` names and move `gc_epoch`, which tells every
        node's chunk sweep that recipes went (node/cluster/gc.py)."""
        conn = self.conn
        # A link from before links had a time (linked_at 0: an older version's data or
        # log entry) gets this collection's time, so its grace starts now, on every node.
        conn.execute("UPDATE repo_blobs SET linked_at = ? WHERE linked_at = 0", (cmd.now,))
        garbage = select_garbage(conn, cmd.now, cmd.grace_seconds)
        remove_garbage(conn, garbage)
        for repo, digest in garbage.links:
            quotas.release(conn, repo, digest)  # what a quota counted is no longer stored
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('gc_epoch', 1)"
            " ON CONFLICT(key) DO UPDATE SET value = value + 1"
        )
        epoch = conn.execute("SELECT value FROM meta WHERE key = 'gc_epoch'").fetchone()[0]
        conn.execute(
            "INSERT INTO gc_runs (epoch, command_id, now, grace_seconds, links, blobs, bytes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (epoch, cmd.id, cmd.now, cmd.grace_seconds, len(garbage.links),
             len(garbage.blobs), garbage.bytes),
        )
        conn.execute("DELETE FROM gc_runs WHERE epoch <= ?", (epoch - RUNS_KEPT,))
        return Result(detail=json.dumps({
            "epoch": epoch, "links": len(garbage.links), "blobs": len(garbage.blobs),
            "bytes": garbage.bytes,
        }))

    # -- access control: each change moves the access version readers cache by --

    def _access_changed(self) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('access', 1)"
            " ON CONFLICT(key) DO UPDATE SET value = value + 1"
        )

    def _apply_put_account(self, cmd: c.PutAccount) -> Result:
        if cmd.create_only and self.conn.execute(
            "SELECT 1 FROM accounts WHERE name = ?", (cmd.name,)
        ).fetchone():
            return Result(Refusal.ACCOUNT_EXISTS, cmd.name)
        self.conn.execute(
            "INSERT INTO accounts (name, robot, secret_hash, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET robot = excluded.robot,"
            " secret_hash = excluded.secret_hash, expires_at = excluded.expires_at",
            (cmd.name, int(cmd.robot), cmd.secret_hash, cmd.expires_at),
        )
        self._access_changed()
        return OK

    def _apply_delete_account(self, cmd: c.DeleteAccount) -> Result:
        cursor = self.conn.execute("DELETE FROM accounts WHERE name = ?", (cmd.name,))
        if not cursor.rowcount:
            return Result(Refusal.ACCOUNT_MISSING, cmd.name)
        self.conn.execute("DELETE FROM grants WHERE principal = ?", (cmd.name,))
        self._access_changed()
        return OK

    def _apply_put_grant(self, cmd: c.PutGrant) -> Result:
        if not self.conn.execute(
            "SELECT 1 FROM accounts WHERE name = ?", (cmd.principal,)
        ).fetchone():
            return Result(Refusal.ACCOUNT_MISSING, cmd.principal)
        self.conn.execute(
            "INSERT INTO grants (principal, pattern, role) VALUES (?, ?, ?)"
            " ON CONFLICT(principal, pattern) DO UPDATE SET role = excluded.role",
            (cmd.principal, cmd.pattern, cmd.role),
        )
        self._access_changed()
        return OK

    def _apply_delete_grant(self, cmd: c.DeleteGrant) -> Result:
        cursor = self.conn.execute(
            "DELETE FROM grants WHERE principal = ? AND pattern = ?", (cmd.principal, cmd.pattern)
        )
        if not cursor.rowcount:
            return Result(Refusal.GRANT_MISSING, f"{cmd.principal} on {cmd.pattern}")
        self._access_changed()
        return OK

    def _apply_set_public(self, cmd: c.SetPublic) -> Result:
        if cmd.public:
            self.conn.execute(
                "INSERT OR IGNORE INTO public_repos (pattern) VALUES (?)", (cmd.pattern,)
            )
        else:
            self.conn.execute("DELETE FROM public_repos WHERE pattern = ?", (cmd.pattern,))
        self._access_changed()
        return OK

    def _apply_add_signing_key(self, cmd: c.AddSigningKey) -> Result:
        conn = self.conn
        conn.execute("DELETE FROM signing_keys WHERE retire_at IS NOT NULL AND retire_at < ?",
                     (cmd.now,))
        conn.execute("UPDATE signing_keys SET retire_at = ? WHERE retire_at IS NULL",
                     (cmd.now + cmd.keep_seconds,))
        conn.execute(
            "INSERT OR IGNORE INTO signing_keys (kid, private_pem, created_at, retire_at)"
            " VALUES (?, ?, ?, NULL)",
            (cmd.kid, cmd.private_pem, cmd.now),
        )
        self._access_changed()
        return OK

    # -- lifecycle: retention policies and immutable tags ---------------------

    def _apply_put_retention_policy(self, cmd: c.PutRetentionPolicy) -> Result:
        self.conn.execute(
            "INSERT INTO retention_policies"
            " (pattern, keep_last, older_than, keep, only, untagged_older_than)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(pattern) DO UPDATE SET"
            " keep_last = excluded.keep_last, older_than = excluded.older_than,"
            " keep = excluded.keep, only = excluded.only,"
            " untagged_older_than = excluded.untagged_older_than",
            (cmd.pattern, cmd.keep_last, cmd.older_than, json.dumps(cmd.keep),
             json.dumps(cmd.only), cmd.untagged_older_than),
        )
        return OK

    def _apply_delete_retention_policy(self, cmd: c.DeleteRetentionPolicy) -> Result:
        cursor = self.conn.execute(
            "DELETE FROM retention_policies WHERE pattern = ?", (cmd.pattern,)
        )
        return OK if cursor.rowcount else Result(Refusal.POLICY_MISSING, cmd.pattern)

    def _apply_apply_retention(self, cmd: c.ApplyRetention) -> Result:
        """Delete what the policies delete at `cmd.now`; the result's detail lists it
        (JSON: {"tags": [[repo, tag, digest]], "manifests": [[repo, digest]]})."""
        conn = self.conn
        # Tags and manifests from before push times were kept (pushed_at 0) count as
        # pushed now: their age starts with the first retention run that sees them.
        for table in ("tags", "manifests"):
            conn.execute(f"UPDATE {table} SET pushed_at = ? WHERE pushed_at = 0", (cmd.now,))
        tags: list[list[str]] = []
        manifests: list[list[str]] = []
        for repo, deletions in Queries(conn).retention_plan(cmd.now):
            for tag in deletions.tags:
                row = conn.execute(
                    "DELETE FROM tags WHERE repo = ? AND tag = ? RETURNING digest", (repo, tag)
                ).fetchall()
                tags.append([repo, tag, row[0][0]])
            for digest in deletions.manifests:
                self._delete_manifest(repo, digest)
                manifests.append([repo, digest])
        return Result(None, json.dumps({"tags": tags, "manifests": manifests}))

    def _apply_put_immutable_tags(self, cmd: c.PutImmutableTags) -> Result:
        self.conn.execute(
            "INSERT INTO immutable_tags (pattern, exclude) VALUES (?, ?)"
            " ON CONFLICT(pattern) DO UPDATE SET exclude = excluded.exclude",
            (cmd.pattern, json.dumps(cmd.exclude)),
        )
        return OK

    def _apply_delete_immutable_tags(self, cmd: c.DeleteImmutableTags) -> Result:
        cursor = self.conn.execute("DELETE FROM immutable_tags WHERE pattern = ?", (cmd.pattern,))
        return OK if cursor.rowcount else Result(Refusal.POLICY_MISSING, cmd.pattern)
    # -- quotas (consensus/quotas.py keeps their usage) ------------------------

    def _apply_set_quota(self, cmd: c.SetQuota) -> Result:
        quotas.set_quota(self.conn, cmd.pattern, cmd.max_bytes, cmd.max_repos)
        return OK

    def _apply_remove_quota(self, cmd: c.RemoveQuota) -> Result:
        if not quotas.remove_quota(self.conn, cmd.pattern):
            return Result(Refusal.QUOTA_MISSING, cmd.pattern)
        return OK
