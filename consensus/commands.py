"""Every change to the replicated metadata, as a command that encodes to msgpack.

A command says everything its application needs: the state machine reads no
clock and draws no random number, so replaying the same log on any node
gives the same tables. Each command carries an id so a retried proposal can
be recognised and applied once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

import msgpack

from consensus.tag_patterns import MAX_TAG_PATTERNS, TagPatternInvalid, check_tag_pattern


def new_command_id() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True, kw_only=True)
class Command:
    kind: ClassVar[str]
    id: str = field(default_factory=new_command_id)

    def encode(self) -> bytes:
        body = asdict(self)
        body["type"] = self.kind
        return msgpack.packb(body, use_bin_type=True)


@dataclass(frozen=True, kw_only=True)
class PutBlob(Command):
    """A blob whose digest was verified and whose chunks are durable; linked to `repo`."""

    kind: ClassVar[str] = "put_blob"
    repo: str
    digest: str
    size: int
    chunk_size: int
    chunks: list[str]
    now: int = 0  # Unix seconds at the proposer: when the link was made (GC's grace counts from it)


@dataclass(frozen=True, kw_only=True)
class MountBlob(Command):
    """Let `repo` serve a blob the registry already holds (cross-repository mount)."""

    kind: ClassVar[str] = "mount_blob"
    repo: str
    digest: str
    now: int = 0  # Unix seconds at the proposer, as for PutBlob


@dataclass(frozen=True, kw_only=True)
class UnlinkBlob(Command):
    """`repo` no longer serves the blob; a garbage collection reclaims what no link keeps."""

    kind: ClassVar[str] = "unlink_blob"
    repo: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class PutManifest(Command):
    """A validated manifest, optionally tagged. `blobs` and `manifests` are the
    digests it references; they are checked again at apply time so that a
    concurrent delete cannot leave a manifest pointing at nothing."""

    kind: ClassVar[str] = "put_manifest"
    repo: str
    digest: str
    media_type: str
    body: bytes
    tag: str | None = None
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    blobs: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    now: int = 0  # Unix seconds at the proposer: the tag's and manifest's push time


@dataclass(frozen=True, kw_only=True)
class DeleteManifest(Command):
    """Remove a manifest and every tag that points at it."""

    kind: ClassVar[str] = "delete_manifest"
    repo: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class DeleteTag(Command):
    kind: ClassVar[str] = "delete_tag"
    repo: str
    tag: str


@dataclass(frozen=True, kw_only=True)
class RegisterMember(Command):
    """Where a member of the group can be reached (its Raft and HTTP addresses)."""

    kind: ClassVar[str] = "register_member"
    node_id: str
    raft: str
    http: str
    zone: str = "default"


@dataclass(frozen=True, kw_only=True)
class UnregisterMember(Command):
    """Forget the addresses of a node that left the group."""

    kind: ClassVar[str] = "unregister_member"
    node_id: str


@dataclass(frozen=True, kw_only=True)
class DrainMember(Command):
    """Mark a member as draining (or no longer): placement gives it no chunk, so the
    others take its copies over before it is removed."""

    kind: ClassVar[str] = "drain_member"
    node_id: str
    draining: bool = True


# Access control (node/access/): accounts, grants, public repositories, signing keys.
ROLES = ("reader", "writer", "maintainer", "admin")


@dataclass(frozen=True, kw_only=True)
class PutAccount(Command):
    """A user (password hash: argon2 or bcrypt) or a robot (`sha256:` of its token), made
    or replaced. `expires_at` (Unix seconds) ends a robot's life; `create_only` refuses an
    account that already exists, so two admins cannot silently overwrite each other."""

    kind: ClassVar[str] = "put_account"
    name: str
    robot: bool = False
    secret_hash: str
    expires_at: int | None = None
    create_only: bool = False


@dataclass(frozen=True, kw_only=True)
class DeleteAccount(Command):
    """Remove an account and every grant it holds."""

    kind: ClassVar[str] = "delete_account"
    name: str


@dataclass(frozen=True, kw_only=True)
class PutGrant(Command):
    """Give `principal` (an account) `role` on the repositories `pattern` matches."""

    kind: ClassVar[str] = "put_grant"
    principal: str
    role: str
    pattern: str


@dataclass(frozen=True, kw_only=True)
class DeleteGrant(Command):
    kind: ClassVar[str] = "delete_grant"
    principal: str
    pattern: str


@dataclass(frozen=True, kw_only=True)
class SetPublic(Command):
    """Allow (or stop allowing) anonymous pulls of the repositories `pattern` matches."""

    kind: ClassVar[str] = "set_public"
    pattern: str
    public: bool = True


@dataclass(frozen=True, kw_only=True)
class AddSigningKey(Command):
    """A new key for the tokens every node signs; the key it replaces keeps verifying
    tokens until `keep_seconds` after `now`, so nobody is logged out by a rotation.
    The proposer draws the key and reads the clock: the state machine does neither."""

    kind: ClassVar[str] = "add_signing_key"
    kid: str
    private_pem: bytes
    now: int
    keep_seconds: int


@dataclass(frozen=True, kw_only=True)
class CollectGarbage(Command):
    """Remove every blob link no manifest of its repository references and made before
    `now - grace_seconds`, then every recipe no link is left to (consensus/garbage.py)."""

    kind: ClassVar[str] = "collect_garbage"
    now: int
    grace_seconds: int
# Lifecycle: retention policies and immutable tags (consensus/retention.py holds the rules).


@dataclass(frozen=True, kw_only=True)
class PutRetentionPolicy(Command):
    """A retention policy for the repositories `pattern` matches, made or replaced.

    Ages are seconds; None leaves that rule out. `keep` and `only` are regexes
    searched in tag names: a tag matching a `keep` is never deleted, and when
    `only` is given only tags matching one of them are considered at all."""

    kind: ClassVar[str] = "put_retention_policy"
    pattern: str
    keep_last: int | None = None
    older_than: int | None = None
    keep: list[str] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    untagged_older_than: int | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteRetentionPolicy(Command):
    kind: ClassVar[str] = "delete_retention_policy"
    pattern: str


@dataclass(frozen=True, kw_only=True)
class ApplyRetention(Command):
    """Delete what every retention policy deletes at `now` (the proposer's clock)."""

    kind: ClassVar[str] = "apply_retention"
    now: int


@dataclass(frozen=True, kw_only=True)
class PutImmutableTags(Command):
    """Tags of the repositories `pattern` matches cannot be moved to another manifest,
    except tags an `exclude` regex finds."""

    kind: ClassVar[str] = "put_immutable_tags"
    pattern: str
    exclude: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class DeleteImmutableTags(Command):
    kind: ClassVar[str] = "delete_immutable_tags"
    pattern: str


@dataclass(frozen=True, kw_only=True)
class SetQuota(Command):
    """Cap the bytes stored and the repositories in a namespace (`team`: `team` and every
    `team/…`) or a glob over repository names; None: no cap on that count."""

    kind: ClassVar[str] = "set_quota"
    pattern: str
    max_bytes: int | None = None
    max_repos: int | None = None


@dataclass(frozen=True, kw_only=True)
class RemoveQuota(Command):
    kind: ClassVar[str] = "remove_quota"
    pattern: str


COMMANDS: dict[str, type[Command]] = {
    cls.kind: cls
    for cls in (
        PutBlob,
        MountBlob,
        UnlinkBlob,
        PutManifest,
        DeleteManifest,
        DeleteTag,
        RegisterMember,
        UnregisterMember,
        DrainMember,
        PutAccount,
        DeleteAccount,
        PutGrant,
        DeleteGrant,
        SetPublic,
        AddSigningKey,
        CollectGarbage,
        PutRetentionPolicy,
        DeleteRetentionPolicy,
        ApplyRetention,
        PutImmutableTags,
        DeleteImmutableTags,
        SetQuota,
        RemoveQuota,
    )
}


class CommandInvalid(ValueError):
    """Bytes that do not decode to a known, well-formed command (never applied)."""


# Decoding is total: whatever an entry holds, `decode` returns a command whose
# every field has the type and range the state machine relies on, or raises
# CommandInvalid. A committed entry is applied on every member and again
# after every restart, so anything else escaping here would stop the group.
MAX_COMMAND_BYTES = 64 << 20  # no bigger entry can travel in one Raft frame anyway
MAX_NAME = 1024  # ids, repositories, tags, digests, member ids and addresses
MAX_ITEMS = 1 << 20  # list and map entries; the byte cap bounds them too, this bounds objects
INT64_MAX = 2**63 - 1  # SQLite's largest integer
_CHUNK_ID = re.compile(r"[0-9a-f]{64}")  # a BLAKE3 id, as the recipe packs it

Check = Callable[[Any], Any]


def _text(limit: int = MAX_NAME) -> Check:
    def check(value: Any) -> str:
        if type(value) is not str or len(value) > limit:
            raise CommandInvalid(f"expected a string of at most {limit} characters")
        return value
    return check


def _name(value: Any) -> str:
    return _text()(value)


def _id(value: Any) -> str:
    if not _name(value):
        raise CommandInvalid("expected a non-empty string")
    return value


def _count(minimum: int) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or not minimum <= value <= INT64_MAX:
            raise CommandInvalid(f"expected an integer from {minimum} to {INT64_MAX}")
        return value
    return check


def _bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise CommandInvalid("expected bytes")
    return value


def _chunk_id(value: Any) -> str:
    if type(value) is not str or not _CHUNK_ID.fullmatch(value):
        raise CommandInvalid("expected a chunk id (64 lowercase hex digits)")
    return value


def _list_of(item: Check) -> Check:
    def check(value: Any) -> list[Any]:
        if type(value) is not list or len(value) > MAX_ITEMS:
            raise CommandInvalid(f"expected a list of at most {MAX_ITEMS} items")
        return [item(v) for v in value]
    return check


def _text_map(value: Any) -> dict[str, str]:
    if type(value) is not dict or len(value) > MAX_ITEMS:
        raise CommandInvalid(f"expected a map of at most {MAX_ITEMS} entries")
    free_text = _text(MAX_COMMAND_BYTES)
    return {free_text(k): free_text(v) for k, v in value.items()}


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise CommandInvalid("expected true or false")
    return value


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in choices or type(value) is not str:
            raise CommandInvalid(f"expected one of {', '.join(choices)}")
        return value
    return check


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _regexes(value: Any) -> list[str]:
    """Tag regexes the state machine will run: each one checked by the same rule that
    refused it at the API (length, syntax, no pattern that can backtrack for ever)."""
    if type(value) is not list or len(value) > MAX_TAG_PATTERNS:
        raise CommandInvalid(f"expected a list of at most {MAX_TAG_PATTERNS} patterns")
    for item in value:
        if type(item) is not str:
            raise CommandInvalid("a tag pattern is a string")
        try:
            check_tag_pattern(item)
        except TagPatternInvalid as exc:
            raise CommandInvalid(str(exc)) from None
    return value


# What each command's fields must hold, field by field; a test checks that
# every command names exactly its dataclass fields here.
FIELD_CHECKS: dict[str, dict[str, Check]] = {
    PutBlob.kind: {
        "id": _id, "repo": _name, "digest": _name, "size": _count(0),
        "chunk_size": _count(1), "chunks": _list_of(_chunk_id), "now": _count(0),
    },
    MountBlob.kind: {"id": _id, "repo": _name, "digest": _name, "now": _count(0)},
    UnlinkBlob.kind: {"id": _id, "repo": _name, "digest": _name},
    PutManifest.kind: {
        "id": _id, "repo": _name, "digest": _name,
        "media_type": _text(MAX_COMMAND_BYTES), "body": _bytes,
        "tag": _optional(_name), "subject": _optional(_name),
        "artifact_type": _optional(_text(MAX_COMMAND_BYTES)),
        "annotations": _optional(_text_map),
        "blobs": _list_of(_name), "manifests": _list_of(_name), "now": _count(0),
    },
    DeleteManifest.kind: {"id": _id, "repo": _name, "digest": _name},
    DeleteTag.kind: {"id": _id, "repo": _name, "tag": _name},
    RegisterMember.kind: {
        "id": _id, "node_id": _id, "raft": _name, "http": _name, "zone": _name,
    },
    UnregisterMember.kind: {"id": _id, "node_id": _id},
    DrainMember.kind: {"id": _id, "node_id": _id, "draining": _flag},
    PutAccount.kind: {
        "id": _id, "name": _id, "robot": _flag, "secret_hash": _text(4096),
        "expires_at": _optional(_count(0)), "create_only": _flag,
    },
    DeleteAccount.kind: {"id": _id, "name": _id},
    PutGrant.kind: {"id": _id, "principal": _id, "role": _one_of(ROLES), "pattern": _id},
    DeleteGrant.kind: {"id": _id, "principal": _id, "pattern": _id},
    SetPublic.kind: {"id": _id, "pattern": _id, "public": _flag},
    AddSigningKey.kind: {
        "id": _id, "kid": _id, "private_pem": _bytes, "now": _count(0),
        "keep_seconds": _count(0),
    },
    CollectGarbage.kind: {"id": _id, "now": _count(0), "grace_seconds": _count(0)},
    PutRetentionPolicy.kind: {
        "id": _id, "pattern": _id, "keep_last": _optional(_count(0)),
        "older_than": _optional(_count(0)), "keep": _regexes, "only": _regexes,
        "untagged_older_than": _optional(_count(0)),
    },
    DeleteRetentionPolicy.kind: {"id": _id, "pattern": _id},
    ApplyRetention.kind: {"id": _id, "now": _count(0)},
    PutImmutableTags.kind: {"id": _id, "pattern": _id, "exclude": _regexes},
    DeleteImmutableTags.kind: {"id": _id, "pattern": _id},
    SetQuota.kind: {
        "id": _id, "pattern": _id, "max_bytes": _optional(_count(0)),
        "max_repos": _optional(_count(0)),
    },
    RemoveQuota.kind: {"id": _id, "pattern": _id},
}


# The fields of each command that may be absent from an entry (they have a default).
DEFAULTED: dict[str, frozenset[str]] = {
    kind: frozenset(
        f.name for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    ) - {"id"}
    for kind, cls in COMMANDS.items()
}


def decode(data: bytes) -> Command:
    """The command `data` encodes, every field checked; CommandInvalid otherwise."""
    if type(data) is not bytes or len(data) > MAX_COMMAND_BYTES:
        raise CommandInvalid(f"a command is bytes of at most {MAX_COMMAND_BYTES}")
    try:
        body = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:  # also invalid UTF-8, extra data
        raise CommandInvalid(f"not msgpack: {exc}") from None
    if type(body) is not dict:
        raise CommandInvalid("a command is a map")
    kind = body.pop("type", None)
    if type(kind) is not str:
        raise CommandInvalid(f"the command type is a {type(kind).__name__}, not a string")
    if kind not in COMMANDS:
        raise CommandInvalid(f"unknown command type {kind[:80]!r}")
    checks = FIELD_CHECKS[kind]
    # A field added to a command later has a default: entries written before it was
    # added (in a log or snapshot of an older version) lack it and take the default.
    wrong = (body.keys() - checks.keys()) | (checks.keys() - body.keys() - DEFAULTED[kind])
    if wrong:
        raise CommandInvalid(f"{kind}: missing or unexpected fields {sorted(map(str, wrong))}"
                             [:400])
    values = {}
    for name, check in checks.items():
        if name not in body:
            continue
        try:
            values[name] = check(body[name])
        except CommandInvalid as exc:
            raise CommandInvalid(f"{kind}.{name}: {exc}") from None
    return COMMANDS[kind](**values)


def is_valid(data: bytes) -> bool:
    """Whether `data` decodes to a command (what a leader checks before appending it)."""
    try:
        decode(data)
    except CommandInvalid:
        return False
    return True
