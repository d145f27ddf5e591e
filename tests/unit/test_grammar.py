"""Names, tags, digests and ranges: what the API accepts before touching the store."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.api.errors import DigestInvalid, NameInvalid, RangeInvalid, TagInvalid
from node.api.grammar import (
    ByteRange,
    parse_digest,
    parse_name,
    parse_range,
    parse_tag,
    parse_upload_range,
)


@pytest.mark.parametrize(
    "name",
    ["a", "library/ubuntu", "team/app", "a.b/c_d/e__f/g--h", "x" * 255, "0/1/2"],
)
def test_valid_repository_names_are_accepted(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "A", "Team/app", "a//b", "/a", "a/", "a/../b", "..", ".a", "a.", "a__", "a___b",
     "a/-b", "x" * 256, "a b", "a%2Fb", "ä"],
)
def test_malformed_repository_names_are_refused(name: str) -> None:
    with pytest.raises(NameInvalid):
        parse_name(name)


@pytest.mark.parametrize("tag", ["latest", "1.0", "_x", "A-b.c_d", "a" * 128])
def test_valid_tags_are_accepted(tag: str) -> None:
    assert parse_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".a", "-a", "a" * 129, "a/b", "a:b", "a b"])
def test_malformed_tags_are_refused(tag: str) -> None:
    with pytest.raises(TagInvalid):
        parse_tag(tag)


def test_sha256_and_sha512_digests_parse() -> None:
    d256 = "sha256:" + hashlib.sha256(b"x").hexdigest()
    d512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert str(parse_digest(d256)) == d256
    assert str(parse_digest(d512)) == d512


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "blake3:" + "a" * 64,
        "sha256" + "a" * 64,
        "sha256:",
        ":abc",
        "sha256:" + "g" * 64,
    ],
)
def test_malformed_or_unknown_digests_are_refused(digest: str) -> None:
    with pytest.raises(DigestInvalid):
        parse_digest(digest)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=50-1000", 100, (50, 99)),
        ("bytes=99-99", 100, (99, 99)),
    ],
)
def test_single_ranges_resolve_against_the_blob_size(
    header: str, size: int, expected: tuple[int, int]
) -> None:
    span = parse_range(header, size)
    assert span is not None and (span.first, span.last) == expected
    assert span.content_range() == f"bytes {expected[0]}-{expected[1]}/{size}"


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100),
                         ("bytes=0-", 0), ("bytes=-5", 0)]
)
def test_unsatisfiable_ranges_raise_416_with_the_size(header: str, size: int) -> None:
    with pytest.raises(RangeInvalid) as caught:
        parse_range(header, size)
    assert caught.value.status == 416
    assert caught.value.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", [None, "", "bytes=", "bytes=-", "items=0-1", "bytes=0-1,5-6",
                                    "bytes=5-1"])
def test_unusable_range_headers_mean_the_whole_blob(header: str | None) -> None:
    assert parse_range(header, 100) is None


@given(size=st.integers(1, 10_000), first=st.integers(0, 20_000), last=st.integers(0, 20_000))
def test_any_satisfiable_range_lies_within_the_blob(size: int, first: int, last: int) -> None:
    try:
        span = parse_range(f"bytes={first}-{last}", size)
    except RangeInvalid:
        assert first >= size
        return
    if span is None:
        assert last < first
        return
    assert isinstance(span, ByteRange)
    assert 0 <= span.first <= span.last < size
    assert span.length == min(last, size - 1) - first + 1


def test_upload_content_range_accepts_both_spellings() -> None:
    assert parse_upload_range("0-99") == (0, 99)
    assert parse_upload_range("bytes 100-199/*") == (100, 199)
    with pytest.raises(RangeInvalid):
        parse_upload_range("99-0")
    with pytest.raises(RangeInvalid):
        parse_upload_range("abc")
