"""Keyset cursors: round trip, tampering, filter mismatch, page cutting."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from jobsprint.events.ids import new_id
from jobsprint.gateway.errors import InvalidCursor
from jobsprint.gateway.pagination import (
    PageRequest,
    decode_cursor,
    encode_cursor,
    filters_hash,
    make_page,
    page_request,
)

pytestmark = pytest.mark.unit

FP = filters_hash("executions", {"status": "success", "workflowId": None})
T0 = datetime(2025, 1, 6, tzinfo=UTC)
IDS = [new_id("exec", T0 + timedelta(seconds=i)) for i in range(10)]  # oldest first


def test_a_cursor_round_trips_and_is_opaque_base64url() -> None:
    cursor = encode_cursor(IDS[3], "after", FP)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor, direction="after", fingerprint=FP, id_prefix="exec") == IDS[3]


def test_the_filter_hash_is_stable_and_sensitive() -> None:
    assert filters_hash("executions", {"workflowId": None, "status": "success"}) == FP
    assert filters_hash("executions", {"status": "error", "workflowId": None}) != FP
    assert filters_hash("workflows", {"status": "success", "workflowId": None}) != FP


def test_a_cursor_reused_with_other_filters_is_refused() -> None:
    cursor = encode_cursor(IDS[3], "after", FP)
    other = filters_hash("executions", {"status": "error", "workflowId": None})
    with pytest.raises(InvalidCursor, match="different filters"):
        decode_cursor(cursor, direction="after", fingerprint=other, id_prefix="exec")


def test_a_cursor_for_the_other_direction_is_refused() -> None:
    cursor = encode_cursor(IDS[3], "after", FP)
    with pytest.raises(InvalidCursor, match="pages with `after`"):
        decode_cursor(cursor, direction="before", fingerprint=FP, id_prefix="exec")


def _forge(doc: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64 !",
        "%%%",
        "a" * 600,
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
        _forge([1, 2]),
        _forge({"v": 1, "k": IDS[0], "d": "a"}),  # missing hash
        _forge({"v": 2, "k": IDS[0], "d": "a", "f": FP}),  # unknown version
        _forge({"v": 1, "k": "exec_short", "d": "a", "f": FP}),  # not an id
        _forge({"v": 1, "k": IDS[0].replace("exec", "wf"), "d": "a", "f": FP}),  # other kind
        _forge({"v": 1, "k": IDS[0], "d": "x", "f": FP}),  # unknown direction
        _forge({"v": 1, "k": IDS[0], "d": "a", "f": FP, "extra": 1}),
        _forge({"v": 1, "k": 5, "d": "a", "f": FP}),
    ],
)
def test_garbage_and_tampered_cursors_are_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(token, direction="after", fingerprint=FP, id_prefix="exec")


def test_a_flipped_character_never_decodes_to_a_valid_cursor_silently() -> None:
    cursor = encode_cursor(IDS[3], "after", FP)
    for index in range(len(cursor)):
        flipped = cursor[:index] + ("A" if cursor[index] != "A" else "B") + cursor[index + 1 :]
        try:
            boundary = decode_cursor(flipped, direction="after", fingerprint=FP, id_prefix="exec")
        except InvalidCursor:
            continue
        # survives only when the change landed in the id's random part: still an id
        assert boundary.startswith("exec_") and len(boundary) == len(IDS[3])


def test_after_and_before_together_are_refused() -> None:
    cursor = encode_cursor(IDS[3], "after", FP)
    with pytest.raises(InvalidCursor):
        page_request(limit=5, after=cursor, before=cursor, fingerprint=FP, id_prefix="exec")


def test_first_page_has_next_cursor_only_when_the_extra_row_exists() -> None:
    newest_first = IDS[::-1]
    request = PageRequest(limit=3, fingerprint=FP)
    page = make_page(newest_first[:4], request, str)
    assert page.items == newest_first[:3]
    assert page.has_more and page.prev_cursor is None
    assert (
        decode_cursor(page.next_cursor or "", direction="after", fingerprint=FP, id_prefix="exec")
        == newest_first[2]
    )
    last = make_page(newest_first[:3], request, str)
    assert last.next_cursor is None and not last.has_more
    assert last.pagination() == {"nextCursor": None, "prevCursor": None, "hasMore": False}


def test_after_page_points_back_to_its_newest_item() -> None:
    request = PageRequest(limit=3, fingerprint=FP, after=IDS[7])
    page = make_page(IDS[6::-1][:4], request, str)  # rows older than IDS[7], newest first
    assert page.items == [IDS[6], IDS[5], IDS[4]]
    assert (
        decode_cursor(page.prev_cursor or "", direction="before", fingerprint=FP, id_prefix="exec")
        == IDS[6]
    )
    assert page.has_more


def test_before_page_is_reversed_to_newest_first() -> None:
    request = PageRequest(limit=3, fingerprint=FP, before=IDS[2])
    ascending = IDS[3:7]  # rows newer than IDS[2], oldest first, one extra
    page = make_page(ascending, request, str)
    assert page.items == [IDS[5], IDS[4], IDS[3]]
    assert (
        decode_cursor(page.prev_cursor or "", direction="before", fingerprint=FP, id_prefix="exec")
        == IDS[5]
    )
    assert (
        decode_cursor(page.next_cursor or "", direction="after", fingerprint=FP, id_prefix="exec")
        == IDS[3]
    )
    newest = make_page(IDS[3:6], request, str)
    assert newest.prev_cursor is None  # nothing newer
    assert newest.has_more  # the boundary row and older ones exist
