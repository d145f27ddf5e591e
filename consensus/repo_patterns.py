"""Repository patterns: a name, or a glob where `*` matches any run of characters.

Grants, public repositories, retention policies, immutable-tag rules and quotas
all name repositories this way (`team/*` covers `team/app` and `team/a/b`; `*`
covers everything). The rule lives here, a leaf with no imports of its own, so
the state machine and the access rules in node/access/ apply the same one.
"""

from __future__ import annotations

import fnmatch


def covers(pattern: str, repo: str) -> bool:
    """Whether `pattern` covers the repository `repo`."""
    return fnmatch.fnmatchcase(repo, pattern) if "*" in pattern else pattern == repo
