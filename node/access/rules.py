"""The access rules as pure functions: roles, patterns, grants, public repositories and
token scopes. No I/O and no clock: `gate.py` feeds them what the replicated state holds.

A grant binds an account to a role on a repository pattern; a pattern is a
repository name in which `*` matches any run of characters, slashes included
(`team/*` covers `team/app` and `team/a/b`; `*` covers everything). An
account's actions on a repository are the union of its matching grants;
anyone may pull from a repository a public pattern matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from consensus.repo_patterns import covers
from node.access.errors import AdminInputInvalid
from node.names import is_repository_name

PULL, PUSH, DELETE, MANAGE, ADMIN = "pull", "push", "delete", "manage", "admin"
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "reader": frozenset({PULL}),
    "writer": frozenset({PULL, PUSH}),
    "maintainer": frozenset({PULL, PUSH, DELETE, MANAGE}),  # MANAGE: that namespace's rules
    "admin": frozenset({PULL, PUSH, DELETE, MANAGE, ADMIN}),
}
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE})  # what a token's scope may name
ALL_REPOSITORIES = "*"

# A pattern is a repository name whose components may hold `*` (no other glob syntax:
# `[` and `?` are not in the name grammar, so they never match by accident).
_PATTERN_COMPONENT = r"(?:[a-z0-9*]+(?:(?:\.|_|__|-+)[a-z0-9*]+)*)"
_PATTERN_RE = re.compile(rf"{_PATTERN_COMPONENT}(?:/{_PATTERN_COMPONENT})*")
ACCOUNT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def parse_pattern(pattern: str) -> str:
    if len(pattern) > 255 or not _PATTERN_RE.fullmatch(pattern):
        raise AdminInputInvalid(
            f"pattern {pattern[:80]!r}: use a repository name, with * for any characters"
        )
    return pattern


def parse_account_name(name: str) -> str:
    if not ACCOUNT_NAME_RE.fullmatch(name):
        raise AdminInputInvalid(
            f"account name {name[:80]!r}: use 1-64 of a-z 0-9 . _ -, starting with a letter "
            "or digit"
        )
    return name


def parse_role(role: object) -> str:
    if not isinstance(role, str) or role not in ROLE_ACTIONS:
        raise AdminInputInvalid(f"role {str(role)[:40]!r}: one of {', '.join(ROLE_ACTIONS)}")
    return role


@dataclass(frozen=True, slots=True)
class GrantRule:
    pattern: str
    role: str


def granted_actions(grants: Iterable[GrantRule], repo: str) -> frozenset[str]:
    """What `grants` (one account's) allow on `repo`."""
    actions: frozenset[str] = frozenset()
    for grant in grants:
        if covers(grant.pattern, repo):
            actions |= ROLE_ACTIONS[grant.role]
    return actions


def is_public(public_patterns: Iterable[str], repo: str) -> bool:
    return any(covers(p, repo) for p in public_patterns)


def is_admin(grants: Iterable[GrantRule]) -> bool:
    """Admin of the cluster: the admin role on every repository (`*`)."""
    return any(g.role == "admin" and g.pattern == ALL_REPOSITORIES for g in grants)


def may_list(grants: Iterable[GrantRule], public_patterns: Iterable[str], repo: str) -> bool:
    """Whether a caller with `grants` sees `repo` in the catalog: it may pull it."""
    return PULL in granted_actions(grants, repo) or is_public(public_patterns, repo)


@dataclass(frozen=True, slots=True)
class Scope:
    """One scope of the Docker token protocol: `repository:NAME:pull,push`, or
    `registry:catalog:*`."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scope(text: str) -> Scope | None:
    """A scope the token endpoint can answer, or None for one it ignores (unknown types,
    malformed text: the spec has the server grant nothing for them, not fail)."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or len(text) > 1024:
        return None
    wanted = tuple(dict.fromkeys(a for a in actions.split(",") if a))
    if kind == "repository":
        if not is_repository_name(name):
            return None
        return Scope(kind, name, wanted)
    if kind == "registry" and name == "catalog":
        return Scope(kind, name, ("*",))
    return None


def allowed_scope(scope: Scope, actions: frozenset[str]) -> Scope:
    """`scope` cut down to `actions` (what the caller may do on it); `*` asks for all."""
    wanted = REPOSITORY_ACTIONS if "*" in scope.actions else frozenset(scope.actions)
    return Scope(scope.type, scope.name, tuple(sorted(wanted & actions & REPOSITORY_ACTIONS)))
