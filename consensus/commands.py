"""Every change to the replicated metadata, as a command that encodes to msgpack.

A command says everything its application needs: the state machine reads no
clock and draws no random number, so replaying the same log on any node
gives the same tables. Each command carries an id so a retried proposal can
be recognised and applied once.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import msgpack


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


@dataclass(frozen=True, kw_only=True)
class MountBlob(Command):
    """Let `repo` serve a blob the registry already holds (cross-repository mount)."""

    kind: ClassVar[str] = "mount_blob"
    repo: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class UnlinkBlob(Command):
    """`repo` no longer serves the blob; its recipe and chunks stay (nothing reclaims them yet)."""

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
    )
}


class CommandInvalid(ValueError):
    """Bytes that do not decode to a known command (never applied)."""


def decode(data: bytes) -> Command:
    try:
        body: dict[str, Any] = msgpack.unpackb(data, raw=False)
        cls = COMMANDS[body.pop("type")]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in names})
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise CommandInvalid(str(exc)) from exc
