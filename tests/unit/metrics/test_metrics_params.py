"""Validation of GET /v1/metrics parameters: ISO 8601 dates, defaults, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobsprint.metrics.queries import InvalidQuery, parse_instant, parse_metrics_query

pytestmark = pytest.mark.unit

NOW = datetime(2025, 2, 10, 15, 30, 12, 345000, tzinfo=UTC)


def parse(**params: str | None) -> object:
    args: dict[str, str | None] = {
        "workspace_id": "ws_1",
        "workflow_id": None,
        "from_date": None,
        "to_date": None,
        "granularity": None,
    }
    args.update(params)
    return parse_metrics_query(now=NOW, **args)  # type: ignore[arg-type]


def problems(**params: str | None) -> list[tuple[str, str]]:
    with pytest.raises(InvalidQuery) as caught:
        parse(**params)
    return caught.value.details


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-06", datetime(2025, 1, 6, tzinfo=UTC)),  # date only: midnight UTC
        ("2025-01-06T12:30:00Z", datetime(2025, 1, 6, 12, 30, tzinfo=UTC)),
        ("2025-01-06T12:30:00z", datetime(2025, 1, 6, 12, 30, tzinfo=UTC)),
        ("2025-01-06T12:30:00.250Z", datetime(2025, 1, 6, 12, 30, 0, 250000, tzinfo=UTC)),
        ("2025-01-06T14:30:00+02:00", datetime(2025, 1, 6, 12, 30, tzinfo=UTC)),
        ("2025-01-06T12:30:00", datetime(2025, 1, 6, 12, 30, tzinfo=UTC)),  # no offset: UTC
        ("2025-01-06 12:30", datetime(2025, 1, 6, 12, 30, tzinfo=UTC)),
        (" 2025-01-06 ", datetime(2025, 1, 6, tzinfo=UTC)),
    ],
)
def test_iso_dates(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2025-13-01",
        "2025-02-30",
        "2025-01-06T25:00:00Z",
        "06/01/2025",
        "1969-12-31",
        "2100-01-02",
        "2025-01-06T12:30:00+25:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:00:00-02:00",
    ],
)
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_defaults_are_the_last_30_days_by_day() -> None:
    query = parse()
    assert query.end == NOW  # type: ignore[attr-defined]
    assert query.start == NOW - timedelta(days=30)  # type: ignore[attr-defined]
    assert query.granularity == "day"  # type: ignore[attr-defined]
    assert query.workflow_id is None  # type: ignore[attr-defined]


def test_only_from_date_runs_to_now_and_only_to_date_covers_30_days_before_it() -> None:
    assert parse(from_date="2025-02-01").end == NOW  # type: ignore[attr-defined]
    query = parse(to_date="2025-02-01")
    assert query.start == datetime(2025, 1, 2, tzinfo=UTC)  # type: ignore[attr-defined]


def test_from_date_in_the_future_is_an_empty_range_not_an_error() -> None:
    query = parse(from_date="2030-01-01")
    assert query.start == query.end  # type: ignore[attr-defined]


def test_equal_dates_are_an_empty_range() -> None:
    query = parse(from_date="2025-01-01", to_date="2025-01-01T00:00:00Z")
    assert query.start == query.end  # type: ignore[attr-defined]


def test_from_after_to_is_refused() -> None:
    assert problems(from_date="2025-01-02", to_date="2025-01-01") == [
        ("fromDate", "must not be after toDate")
    ]


def test_unknown_granularity_is_refused_naming_the_choices() -> None:
    [(field, message)] = problems(granularity="month")
    assert field == "granularity"
    assert "hour, day, week" in message and "'month'" in message


def test_a_bad_date_names_its_field_and_shows_an_example() -> None:
    [(field, message)] = problems(from_date="last tuesday")
    assert field == "fromDate"
    assert "ISO 8601" in message and "2025-01-06" in message


def test_every_problem_is_listed() -> None:
    found = problems(workspace_id=None, from_date="x", to_date="y", granularity="minute")
    assert [f for f, _ in found] == ["workspaceId", "granularity", "fromDate", "toDate"]


def test_too_many_buckets_is_refused() -> None:
    [(field, message)] = problems(from_date="2000-01-01", to_date="2025-01-01", granularity="hour")
    assert field == "granularity" and "coarser" in message
    assert parse(from_date="2000-01-01", to_date="2025-01-01", granularity="week")


def test_blank_workflow_means_every_workflow() -> None:
    assert parse(workflow_id="  ").workflow_id is None  # type: ignore[attr-defined]
    assert parse(workflow_id="wf_1").workflow_id == "wf_1"  # type: ignore[attr-defined]
