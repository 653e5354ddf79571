"""Time buckets of the metrics time series: UTC hours, days, Monday weeks, every bucket that
intersects [fromDate, toDate) listed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobsprint.metrics.queries import bucket_count, bucket_floor, buckets

pytestmark = pytest.mark.unit


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("moment", "granularity", "start"),
    [
        ("2025-01-08T13:45:10.500Z", "hour", "2025-01-08T13:00:00Z"),
        ("2025-01-08T13:45:10.500Z", "day", "2025-01-08T00:00:00Z"),
        ("2025-01-08T13:45:10.500Z", "week", "2025-01-06T00:00:00Z"),  # Wednesday -> Monday
        ("2025-01-06T00:00:00Z", "week", "2025-01-06T00:00:00Z"),  # a Monday is its own start
        ("2025-01-12T23:59:59.999Z", "week", "2025-01-06T00:00:00Z"),  # Sunday night
        ("2025-01-01T10:00:00Z", "week", "2024-12-30T00:00:00Z"),  # across a year
        # an offset is converted to UTC before bucketing: 01:30+02:00 is the previous UTC day
        ("2025-01-08T01:30:00+02:00", "day", "2025-01-07T00:00:00Z"),
    ],
)
def test_bucket_floor(moment: str, granularity: str, start: str) -> None:
    assert bucket_floor(at(moment), granularity) == at(start)  # type: ignore[arg-type]


def test_day_buckets_cover_every_day_the_range_touches_including_empty_ones() -> None:
    got = buckets(at("2025-01-01T12:00:00Z"), at("2025-01-04T06:00:00Z"), "day")
    assert got == [at(f"2025-01-0{d}T00:00:00Z") for d in (1, 2, 3, 4)]


def test_the_end_is_exclusive() -> None:
    got = buckets(at("2025-01-01T00:00:00Z"), at("2025-01-03T00:00:00Z"), "day")
    assert got == [at("2025-01-01T00:00:00Z"), at("2025-01-02T00:00:00Z")]
    one_ms_more = buckets(at("2025-01-01T00:00:00Z"), at("2025-01-03T00:00:00.001Z"), "day")
    assert one_ms_more[-1] == at("2025-01-03T00:00:00Z")


def test_hour_buckets() -> None:
    got = buckets(at("2025-01-01T22:30:00Z"), at("2025-01-02T01:00:00Z"), "hour")
    assert got == [
        at("2025-01-01T22:00:00Z"),
        at("2025-01-01T23:00:00Z"),
        at("2025-01-02T00:00:00Z"),
    ]


def test_week_buckets_start_on_monday() -> None:
    got = buckets(at("2025-01-01T00:00:00Z"), at("2025-01-20T00:00:00Z"), "week")
    assert got == [
        at("2024-12-30T00:00:00Z"),
        at("2025-01-06T00:00:00Z"),
        at("2025-01-13T00:00:00Z"),
    ]
    assert all(b.weekday() == 0 for b in got)


def test_an_empty_range_has_no_buckets() -> None:
    moment = at("2025-01-01T10:00:00Z")
    assert buckets(moment, moment, "hour") == []
    assert bucket_count(moment, moment, "week") == 0


def test_a_range_inside_one_bucket_has_that_bucket() -> None:
    got = buckets(at("2025-01-01T10:15:00Z"), at("2025-01-01T10:16:00Z"), "week")
    assert got == [at("2024-12-30T00:00:00Z")]


def test_bucket_count_matches_the_buckets() -> None:
    start = datetime(2025, 3, 1, 7, 13, tzinfo=UTC)
    for hours in (1, 5, 24, 24 * 9 + 3, 24 * 40):
        end = start + timedelta(hours=hours, minutes=1)
        for granularity in ("hour", "day", "week"):
            assert bucket_count(start, end, granularity) == len(  # type: ignore[arg-type]
                buckets(start, end, granularity)  # type: ignore[arg-type]
            )


def test_buckets_are_utc_whatever_the_input_zone() -> None:
    tokyo = timezone(timedelta(hours=9))
    got = buckets(
        datetime(2025, 1, 2, 3, 0, tzinfo=tokyo), datetime(2025, 1, 2, 12, tzinfo=tokyo), "day"
    )
    assert got == [at("2025-01-01T00:00:00Z"), at("2025-01-02T00:00:00Z")]
    assert all(b.tzinfo == UTC for b in got)
