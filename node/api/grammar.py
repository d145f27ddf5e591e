"""What repository names, tags, digests and byte ranges look like.

Pure parsing, no I/O: every value that arrives in a URL or header passes
through one of these functions before anything else touches it, so a
malformed name or a path trick never reaches the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node.api.errors import DigestInvalid, NameInvalid, RangeInvalid, TagInvalid
from node.names import NAME_MAX, is_repository_name
from node.storage.digest import Digest

__all__ = ["ByteRange", "Digest", "parse_digest", "parse_name", "parse_range", "parse_tag"]

TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

# Algorithms Flotilla stores content under, with the hex length of each.
DIGEST_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")


def parse_name(name: str) -> str:
    """A repository name per the spec's grammar, or NameInvalid."""
    if not is_repository_name(name):
        raise NameInvalid(detail={"name": name[:NAME_MAX + 1]})
    return name


def is_tag(reference: str) -> bool:
    return TAG_RE.fullmatch(reference) is not None


def parse_tag(tag: str) -> str:
    if not is_tag(tag):
        raise TagInvalid("invalid tag", detail={"tag": tag[:200]})
    return tag


def parse_digest(text: str) -> Digest:
    """A digest Flotilla can verify, or DigestInvalid (also for unknown algorithms)."""
    match = _DIGEST_RE.fullmatch(text)
    if not match:
        raise DigestInvalid("invalid digest", detail={"digest": text[:200]})
    algorithm, encoded = match.groups()
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise DigestInvalid("unsupported digest algorithm", detail={"digest": text[:200]})
    if len(encoded) != length or not re.fullmatch(r"[0-9a-f]+", encoded):
        raise DigestInvalid("invalid digest", detail={"digest": text[:200]})
    return Digest(algorithm, encoded)


def is_digest(reference: str) -> bool:
    return ":" in reference


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive, satisfiable byte range [first, last] of a blob of `size` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.size}"


_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")

# Past any blob's end. Offsets longer than this are clamped to it rather than
# converted: int() refuses strings of thousands of digits.
OFFSET_BEYOND = 10**19


def _offset(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    return OFFSET_BEYOND if len(significant) > 19 else int(significant)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range a GET asks for (RFC 9110 §14.1.2), or None for the whole blob.

    A syntactically wrong or multi-part Range header is ignored, as RFC 9110
    allows; a well-formed one that the blob cannot satisfy raises RangeInvalid.
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if not match:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    unsatisfiable = RangeInvalid(
        "requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
    )
    if not first_text:
        suffix = _offset(last_text)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1, size)
    first = _offset(first_text)
    last = _offset(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise unsatisfiable
    return ByteRange(first, min(last, size - 1), size)


_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/([0-9]+|\*))?")


def parse_upload_range(header: str) -> tuple[int, int]:
    """A PATCH chunk's `Content-Range: <start>-<end>` (inclusive), as (start, end)."""
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if not match:
        raise RangeInvalid("invalid Content-Range", detail={"Content-Range": header[:100]})
    start, end = _offset(match.group(1)), _offset(match.group(2))
    if end < start:
        raise RangeInvalid("invalid Content-Range", detail={"Content-Range": header[:100]})
    return start, end
