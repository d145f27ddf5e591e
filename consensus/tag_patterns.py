"""Tag regexes that policies hold, checked so that the state machine can always run them.

A retention policy or an immutable-tag rule names tags by regex (`^v\\d+\\.\\d+\\.\\d+$`,
`^pr-`), and the state machine runs those regexes while applying a command on
every node: a regex that backtracks for minutes would stall every member at
the same entry. Python's `re` cannot be interrupted, so the patterns are
held to a shape whose backtracking stays small on a tag (at most 128
characters): no backreferences or lookarounds, no quantified group that holds a
quantifier or an alternation (the exponential shapes, `(a+)+`, `(a|a)*`), and
at most three unbounded quantifiers in all (polynomial in their number). A
pattern is checked when it is set (a 400 naming the fault) and again when its
command is decoded, so no entry in the log can hold one of another shape.
"""

from __future__ import annotations

import re

MAX_TAG_PATTERN = 128  # characters in one pattern
MAX_TAG_PATTERNS = 32  # patterns in one list of a policy or rule
MAX_UNBOUNDED = 3  # quantifiers without a small upper bound: *, +, {n,} and {n,m} with m > 8


class TagPatternInvalid(ValueError):
    """A tag pattern that does not compile or has a shape the state machine refuses."""


def check_tag_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled, or TagPatternInvalid saying what is wrong with it."""
    if not pattern or len(pattern) > MAX_TAG_PATTERN:
        raise TagPatternInvalid(f"a tag pattern has 1 to {MAX_TAG_PATTERN} characters")
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise TagPatternInvalid(f"tag pattern {pattern!r} does not compile: {exc}") from None
    _check_shape(pattern)
    return compiled


def _quantifier_at(pattern: str, i: int) -> tuple[int, bool] | None:
    """The quantifier starting at `i`: (its length, whether it is unbounded), or None."""
    if i >= len(pattern):
        return None
    char = pattern[i]
    if char in "*+":
        return 1, True
    if char == "?":
        return 1, False
    if char == "{":
        close = pattern.find("}", i)
        bounds = re.fullmatch(r"(\d*)(,?)(\d*)", pattern[i + 1 : close]) if close > 0 else None
        if bounds is None or not (bounds[1] or bounds[3]):
            return None  # a literal brace
        upper = bounds[3] if bounds[2] else bounds[1]
        return close - i + 1, not upper or int(upper) > 8
    return None


def _check_shape(pattern: str) -> None:
    groups: list[bool] = []  # per open group: whether it holds a quantifier or alternation
    unbounded = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 < len(pattern) and pattern[i + 1] in "123456789gk":
                raise TagPatternInvalid(f"tag pattern {pattern!r}: no backreferences")
            i += 2
            quantified = _quantifier_at(pattern, i)
        elif char == "[":
            i = _class_end(pattern, i) + 1
            quantified = _quantifier_at(pattern, i)
        elif char == "(":
            if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!", "(?P="), i):
                raise TagPatternInvalid(f"tag pattern {pattern!r}: no lookarounds or "
                                        "backreferences")
            groups.append(False)
            i += 1
            continue
        elif char == ")":
            inner = groups.pop() if groups else False
            i += 1
            quantified = _quantifier_at(pattern, i)
            if quantified and inner:
                raise TagPatternInvalid(
                    f"tag pattern {pattern!r}: a repeated group may not hold a repetition or "
                    "an alternation (it can backtrack for ever)"
                )
            if groups and inner:
                groups[-1] = True
        elif char == "|":
            if groups:
                groups[-1] = True
            i += 1
            continue
        else:
            i += 1
            quantified = _quantifier_at(pattern, i)
        if quantified:
            length, is_unbounded = quantified
            unbounded += is_unbounded
            if groups:
                groups[-1] = True
            i += length
            if i < len(pattern) and pattern[i] in "?+":  # lazy or possessive: same cost
                i += 1
    if unbounded > MAX_UNBOUNDED:
        raise TagPatternInvalid(
            f"tag pattern {pattern!r}: at most {MAX_UNBOUNDED} of *, + and {{n,}}"
        )


def _class_end(pattern: str, start: int) -> int:
    """The index of the `]` closing the character class opened at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i
