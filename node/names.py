"""The grammar of repository names (the distribution spec's), shared by the API, which
refuses a bad name with NAME_INVALID, and the access rules, which match names."""

from __future__ import annotations

import re

NAME_MAX = 255
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


def is_repository_name(name: str) -> bool:
    return len(name) <= NAME_MAX and NAME_RE.fullmatch(name) is not None
