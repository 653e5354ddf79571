"""Opaque keyset cursors (pure logic).

A cursor is base64url JSON `{"v": 1, "k": <boundary id>, "d": "after"|"before", "f": <hash of
the filters>}`. `after` pages go to older items (`id < k`, newest first), `before` pages to
newer ones (`id > k`, queried ascending and reversed). The filter hash makes a cursor fail
loudly (400) when reused with other filters instead of silently returning a wrong page.
Cursors are not secrets: a hand-edited boundary id only moves the page start, and every query
stays scoped to the caller's workspace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import orjson

from jobsprint.events.ids import looks_like_id
from jobsprint.gateway.errors import InvalidCursor

Direction = Literal["after", "before"]
T = TypeVar("T")

_VERSION = 1
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,512}$")
_DIRECTIONS = {"a": "after", "b": "before"}


def filters_hash(resource: str, filters: Mapping[str, str | None]) -> str:
    """A short stable hash of the listing's filters (normalised values, None for absent)."""
    canonical = orjson.dumps({"resource": resource, **filters}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode_cursor(boundary: str, direction: Direction, fingerprint: str) -> str:
    doc = {"v": _VERSION, "k": boundary, "d": direction[0], "f": fingerprint}
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def decode_cursor(token: str, *, direction: Direction, fingerprint: str, id_prefix: str) -> str:
    """The boundary id of a cursor given as `?{direction}=`; InvalidCursor when it is not one
    of ours, was made for the other direction, or for other filters."""
    if not _TOKEN.match(token):
        raise InvalidCursor(f"{direction}: malformed cursor", [_detail(direction, "malformed")])
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor(
            f"{direction}: malformed cursor", [_detail(direction, "malformed")]
        ) from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"v", "k", "d", "f"}
        or doc["v"] != _VERSION
        or not isinstance(doc["k"], str)
        or not looks_like_id(id_prefix, doc["k"])
        or doc["d"] not in _DIRECTIONS
        or not isinstance(doc["f"], str)
    ):
        raise InvalidCursor(f"{direction}: malformed cursor", [_detail(direction, "malformed")])
    if _DIRECTIONS[doc["d"]] != direction:
        other = _DIRECTIONS[doc["d"]]
        message = f"this cursor pages with `{other}`, not `{direction}`"
        raise InvalidCursor(message, [_detail(direction, message)])
    if doc["f"] != fingerprint:
        message = "cursor was issued for different filters; start again without a cursor"
        raise InvalidCursor(message, [_detail(direction, message)])
    return str(doc["k"])


def _detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


@dataclass(frozen=True)
class PageRequest:
    """What one page asks for: `limit` items older than `after` or newer than `before`."""

    limit: int
    fingerprint: str
    after: str | None = None
    before: str | None = None

    @property
    def ascending(self) -> bool:
        """`before` pages are read oldest-first from the boundary, then reversed."""
        return self.before is not None

    @property
    def fetch(self) -> int:
        """Rows to fetch: one extra tells whether more exist, without a count."""
        return self.limit + 1


def page_request(
    *,
    limit: int,
    after: str | None,
    before: str | None,
    fingerprint: str,
    id_prefix: str,
) -> PageRequest:
    if after is not None and before is not None:
        raise InvalidCursor(
            "give either `after` or `before`, not both",
            [_detail("after", "not allowed together with before")],
        )
    return PageRequest(
        limit=limit,
        fingerprint=fingerprint,
        after=None
        if after is None
        else decode_cursor(after, direction="after", fingerprint=fingerprint, id_prefix=id_prefix),
        before=None
        if before is None
        else decode_cursor(
            before, direction="before", fingerprint=fingerprint, id_prefix=id_prefix
        ),
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # older items exist
    prev_cursor: str | None  # newer items exist

    @property
    def has_more(self) -> bool:
        """More items in the default (newest-first) direction, i.e. `nextCursor` is set."""
        return self.next_cursor is not None

    def pagination(self) -> dict[str, object]:
        return {
            "nextCursor": self.next_cursor,
            "prevCursor": self.prev_cursor,
            "hasMore": self.has_more,
        }


def make_page(rows: Sequence[T], request: PageRequest, id_of: Callable[[T], str]) -> Page[T]:
    """Cut the fetched rows (`request.fetch` of them, in query order) into a page, newest
    first, with its cursors."""
    extra = len(rows) > request.limit
    kept = list(rows[: request.limit])
    fp = request.fingerprint
    if request.before is not None:
        items = kept[::-1]
        prev_cursor: str | None = encode_cursor(id_of(items[0]), "before", fp) if extra else None
        # the boundary item itself is older than everything here
        oldest = id_of(items[-1]) if items else request.before
        next_cursor = encode_cursor(oldest, "after", fp)
        return Page(items, next_cursor, prev_cursor)
    items = kept
    older: str | None = encode_cursor(id_of(items[-1]), "after", fp) if extra else None
    newer: str | None = None
    if request.after is not None:
        newest = id_of(items[0]) if items else request.after
        newer = encode_cursor(newest, "before", fp)
    return Page(items, older, newer)
