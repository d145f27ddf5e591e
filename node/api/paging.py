"""Pagination of listings (`?n=` and `?last=`), shared by tags, catalog and referrers.

A page is one query of the local state for at most `n` + 1 items: the extra
one only says whether a `Link` to the next page is due. `page_response` is
how each listing sends its page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from quart import Response
from werkzeug.datastructures import MultiDict

from node.api.errors import PaginationNumberInvalid

T = TypeVar("T")

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    last: str | None


def parse_page(args: MultiDict[str, str]) -> Page:
    """`n` (0 … MAX_PAGE; absent means DEFAULT_PAGE) and `last` from the query string."""
    raw = args.get("n")
    if raw is None or raw == "":
        limit = DEFAULT_PAGE
    elif _DIGITS.fullmatch(raw):
        # Anything longer than MAX_PAGE's digits is above it; int() of a
        # thousands-digit string would fail.
        limit = MAX_PAGE if len(raw.lstrip("0")) > len(str(MAX_PAGE)) else min(int(raw), MAX_PAGE)
    else:
        raise PaginationNumberInvalid(detail={"n": raw[:40]})
    return Page(limit, args.get("last") or None)


def fetch_page(
    page: Page,
    fetch: Callable[[str | None, int], list[T]],
    path: str,
    *,
    key: Callable[[T], str] = str,
    keep: Mapping[str, str] | None = None,
) -> tuple[list[T], dict[str, str]]:
    """One page of items plus the `Link` header that points at the next, if any.

    `key` gives the `last` an item leaves for the next page; `keep` is query
    parameters the next page must carry too (a filter, say).
    """
    if page.limit == 0:
        return [], {}
    items = fetch(page.last, page.limit + 1)
    headers = {}
    if len(items) > page.limit:
        items = items[: page.limit]
        query = urlencode({**(keep or {}), "n": page.limit, "last": key(items[-1])})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return items, headers


def page_response(doc: dict[str, Any], headers: dict[str, str], content_type: str) -> Response:
    """A 200 carrying one page as JSON, with the page's `Link` (if any) among `headers`."""
    return Response(
        json.dumps(doc), status=200, headers={**headers, "Content-Type": content_type}
    )
