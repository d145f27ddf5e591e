"""What a retention policy deletes from one repository: a pure function of the policy,
the repository's tags and manifests with their push times, and `now`.

No I/O and no clock, so the state machine (applying `ApplyRetention(now)` the
same way on every node) and `flotilla policy test` (what would go now) ask
the very same function. The rules, each left out when unset:

- Tags considered: those an `only` regex finds (every tag when `only` is
  empty), less those a `keep` regex finds, which are never deleted.
- Of the considered tags, one is deleted when it is not among the `keep_last`
  most recently pushed (ties broken by tag name), or when it was pushed more
  than `older_than` seconds before `now`: each rule set deletes on its own.
- `untagged_older_than`: a manifest no tag points at once the tags above are
  gone, pushed more than that many seconds before `now`, is deleted too,
  unless another manifest of the repository references it (an index's child)
  or it refers to a manifest of the repository (a signature, an SBOM): those
  go with what they belong to.

A push time of 0 is a tag or manifest written before push times were kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    pattern: str  # the repositories it applies to (a name, or a glob with *)
    keep_last: int | None = None
    older_than: int | None = None  # seconds
    keep: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    untagged_older_than: int | None = None  # seconds


@dataclass(frozen=True, slots=True)
class TaggedAt:
    tag: str
    digest: str
    pushed_at: int


@dataclass(frozen=True, slots=True)
class ManifestAt:
    digest: str
    pushed_at: int
    referenced: bool  # another manifest of the repository names it, or it has a subject there


@dataclass(frozen=True, slots=True)
class Deletions:
    tags: tuple[str, ...] = ()
    manifests: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tags or self.manifests)


@dataclass
class _Regexes:
    """Compiled once per application, whatever the number of repositories."""

    cache: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def finds(self, patterns: Iterable[str], tag: str) -> bool:
        for pattern in patterns:
            compiled = self.cache.get(pattern)
            if compiled is None:
                compiled = self.cache[pattern] = re.compile(pattern)
            if compiled.search(tag):
                return True
        return False


def plan_retention(
    policy: RetentionPolicy, tags: Iterable[TaggedAt], manifests: Iterable[ManifestAt],
    now: int, *, regexes: _Regexes | None = None,
) -> Deletions:
    """The tags and manifests `policy` deletes from one repository at `now`."""
    regexes = regexes or _Regexes()
    tags = list(tags)
    considered = [
        t for t in tags
        if (not policy.only or regexes.finds(policy.only, t.tag))
        and not regexes.finds(policy.keep, t.tag)
    ]
    newest_first = sorted(considered, key=lambda t: (-_pushed(t.pushed_at, now), t.tag))
    doomed: set[str] = set()
    for rank, t in enumerate(newest_first):
        if policy.keep_last is not None and rank >= policy.keep_last:
            doomed.add(t.tag)
        if policy.older_than is not None and now - _pushed(t.pushed_at, now) > policy.older_than:
            doomed.add(t.tag)
    gone_manifests: list[str] = []
    if policy.untagged_older_than is not None:
        still_tagged = {t.digest for t in tags if t.tag not in doomed}
        gone_manifests = sorted(
            m.digest for m in manifests
            if m.digest not in still_tagged and not m.referenced
            and now - _pushed(m.pushed_at, now) > policy.untagged_older_than
        )
    return Deletions(tuple(sorted(doomed)), tuple(gone_manifests))


def _pushed(pushed_at: int, now: int) -> int:
    """A push time, with 0 (pushed before push times were kept) as `now`: what a
    retention run stamps such rows with before it plans (consensus/state.py)."""
    return pushed_at or now


def new_regex_cache() -> _Regexes:
    return _Regexes()
