"""Execution metrics: request validation, time buckets, the SQL, and the response shape.

Everything above `execution_metrics` is pure and unit-tested. The rules, as documented for
`GET /v1/executions/metrics`:

* The range is half-open, `[fromDate, toDate)`, over `finishedAt`. Dates are ISO 8601; a date
  without a time means midnight UTC, a time without an offset means UTC. Defaults: `toDate`
  is now, `fromDate` is 30 days before `toDate`. `fromDate == toDate` is an empty range.
* Counted: finished executions (status `success` or `error`) of the workspace, optionally of
  one workflow. Cancelled, unfinished and deleted executions are not.
* Buckets are UTC hours, days or weeks (starting Monday 00:00 UTC); every bucket that
  intersects the range is listed, empty ones with zeros.
* `successRate` = successful / total, rounded half up to 4 decimals; `averageDuration` is the
  mean of `duration_ms`, rounded half up to a whole ms; zero when nothing finished.
* `pNNDuration` is `numpy.percentile(durations, NN)` (linear interpolation between order
  statistics, numpy's default) rounded half up to a whole ms; exact, never a sketch.

How: one pass over `finished_executions FINAL` (schema.py says why that table) groups the
range's rows by bucket: count, successful, duration sum and largest per bucket, and each
bucket's `quantilesExactInclusive` state (all its durations); the outer query adds the
buckets up and merges the states into the percentiles over the whole range (measured a
little cheaper than three -Resample aggregates beside an ungrouped quantile).
ClickHouse's `quantileExactInclusive` interpolates between the same two order statistics as
numpy with slightly different float rounding. That only matters when the value sits within
float noise of a half; then (rarely) a second read fetches the exact order statistics
(`quantilesExact` at levels that pick them by index) and the interpolation is done here with
numpy's own arithmetic, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any, Literal, cast

from jobsprint.metrics.clickhouse import AsyncClickHouse, ClickHouseError
from jobsprint.metrics.schema import FINISHED_TABLE

Granularity = Literal["hour", "day", "week"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day", "week")
DEFAULT_GRANULARITY: Granularity = "day"
DEFAULT_RANGE = timedelta(days=30)
MAX_BUCKETS = 10_000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
PERCENTILES = (50, 95, 99)
ID_MAX_LENGTH = 200
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


class InvalidQuery(Exception):
    """Request parameters that cannot be answered; `details` are (field, message) pairs."""

    def __init__(self, details: list[tuple[str, str]]) -> None:
        self.details = details
        super().__init__("; ".join(f"{name}: {message}" for name, message in details))


@dataclass(frozen=True)
class MetricsQuery:
    workspace_id: str
    workflow_id: str | None
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC
    granularity: Granularity


# --- validation -------------------------------------------------------------------------------


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; ValueError with a reason."""
    given = text.strip()
    if not given:
        raise ValueError("must not be empty")
    text = given.upper()  # lower-case `t` and `z` are ISO 8601 too
    try:
        if len(text) <= 10 and "T" not in text:
            day = date.fromisoformat(text)
            value = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{given!r} is not an ISO 8601 date or date-time "
            "(e.g. 2025-01-06 or 2025-01-06T12:30:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        value = EARLIEST - timedelta(days=1)  # year 1 or 9999 shifted out of range
    if not EARLIEST <= value <= LATEST:
        raise ValueError("must be between 1970-01-01 and 2100-01-01")
    return value


def parse_metrics_query(
    *,
    workspace_id: str | None,
    workflow_id: str | None,
    from_date: str | None,
    to_date: str | None,
    granularity: str | None,
    now: datetime,
) -> MetricsQuery:
    """The request's parameters checked and defaulted; InvalidQuery lists every problem."""
    problems: list[tuple[str, str]] = []
    workspace = (workspace_id or "").strip()
    if not workspace:
        problems.append(("workspaceId", "is required"))
    elif len(workspace) > ID_MAX_LENGTH:
        problems.append(("workspaceId", f"must be at most {ID_MAX_LENGTH} characters"))
    workflow = (workflow_id or "").strip() or None
    if workflow is not None and len(workflow) > ID_MAX_LENGTH:
        problems.append(("workflowId", f"must be at most {ID_MAX_LENGTH} characters"))
    grain_text = (granularity or "").strip() or DEFAULT_GRANULARITY
    if grain_text not in GRANULARITIES:
        problems.append(
            ("granularity", f"must be one of {', '.join(GRANULARITIES)}, not {grain_text!r}")
        )
    grain = cast(Granularity, grain_text)
    start = end = None
    for name, text in (("fromDate", from_date), ("toDate", to_date)):
        if text is None:
            continue
        try:
            value = parse_instant(text)
        except ValueError as exc:
            problems.append((name, str(exc)))
            continue
        if name == "fromDate":
            start = value
        else:
            end = value
    bad_dates = any(name in ("fromDate", "toDate") for name, _ in problems)
    if not bad_dates:
        if end is None:
            # A fromDate in the future without a toDate is an empty range, not an error.
            end = now.astimezone(UTC) if start is None else max(start, now.astimezone(UTC))
        if start is None:
            start = max(end - DEFAULT_RANGE, EARLIEST)
        if start > end:
            problems.append(("fromDate", "must not be after toDate"))
        elif grain_text in GRANULARITIES and bucket_count(start, end, grain) > MAX_BUCKETS:
            problems.append(
                (
                    "granularity",
                    f"{grain} buckets over this range would be more than {MAX_BUCKETS}; "
                    "use a coarser granularity or a shorter range",
                )
            )
    if problems:
        raise InvalidQuery(problems)
    assert start is not None and end is not None
    return MetricsQuery(workspace, workflow, start, end, grain)


# --- buckets ----------------------------------------------------------------------------------


def bucket_floor(moment: datetime, granularity: Granularity) -> datetime:
    """Start of the UTC hour, day or week (Monday) holding `moment`."""
    moment = moment.astimezone(UTC)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "day":
        return day
    return day - timedelta(days=day.weekday())


def bucket_count(start: datetime, end: datetime, granularity: Granularity) -> int:
    if end <= start:
        return 0
    return math.ceil((end - bucket_floor(start, granularity)) / _STEP[granularity])


def buckets(start: datetime, end: datetime, granularity: Granularity) -> list[datetime]:
    """Starts of every bucket that intersects `[start, end)`, in order."""
    first = bucket_floor(start, granularity)
    step = _STEP[granularity]
    return [first + i * step for i in range(bucket_count(start, end, granularity))]


# --- rounding and percentiles -----------------------------------------------------------------


def round_half_up(value: float | Fraction) -> int:
    """Nearest integer, halves rounded up (durations are never negative)."""
    whole = math.floor(value)
    return whole + 1 if value - whole >= Fraction(1, 2) else whole


def ratio(part: int, whole: int) -> float:
    """part / whole rounded half up to 4 decimals; 0 when whole is 0."""
    if whole == 0:
        return 0.0
    return round_half_up(Fraction(part, whole) * 10_000) / 10_000


def mean_ms(total_ms: int, count: int) -> int:
    """The mean rounded half up to a whole ms; 0 when count is 0."""
    return round_half_up(Fraction(total_ms, count)) if count else 0


@dataclass(frozen=True)
class PercentilePlan:
    """Where numpy.percentile(values, q) (method 'linear') of n values reads."""

    lower: int  # index into the sorted values
    upper: int
    weight: float  # gamma


def percentile_plan(n: int, q: float) -> PercentilePlan:
    """numpy's arithmetic: virtual index (n - 1) * (q / 100), its floor and fraction."""
    if n < 1:
        raise ValueError("no values")
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return PercentilePlan(n - 1, n - 1, 0.0)
    lower = math.floor(virtual)
    return PercentilePlan(lower, lower + 1, virtual - lower)


def interpolate(plan: PercentilePlan, values: Mapping[int, int]) -> float:
    """numpy's `_lerp`, bit for bit, over the order statistics `values` (index -> value)."""
    a, b, t = values[plan.lower], values[plan.upper], plan.weight
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


def engine_weight(n: int, q: float) -> float:
    """The interpolation weight ClickHouse's quantileExactInclusive uses for level q / 100
    over n values: h = level * (n - 1) + 1, weight h - floor(h) (same IEEE operations)."""
    h = (q / 100) * (n - 1) + 1
    return h - int(h)


def settle_percentile(n: int, q: float, engine_value: float, max_value: int) -> int | None:
    """numpy.percentile(values, q) rounded half up, from ClickHouse's quantileExactInclusive
    value over the same n values (largest `max_value`), or None when the two could round
    differently and the exact order statistics must be read instead.

    Both interpolate between the same order statistics a <= b; they differ only in float
    rounding: the weight (identical unless h = level * (n - 1) + 1 crossed a power of two)
    and the formula (numpy computes b - d * (1 - t) when t >= 0.5). So the values differ by
    at most |t_numpy - t_engine| * (b - a) plus a few units in the last place, and only a
    value that close to a half can round differently.
    """
    plan = percentile_plan(n, q)
    if plan.lower == plan.upper:
        return round_half_up(engine_value)  # one order statistic, no interpolation
    numpy_t, engine_t = plan.weight, engine_weight(n, q)
    if numpy_t == engine_t and (numpy_t * 1024).is_integer() and max_value < 2**40:
        return round_half_up(engine_value)  # t = k/1024: both compute the exact value
    slack = abs(numpy_t - engine_t) * max_value + 8 * math.ulp(float(max_value) + 1) + 1e-9
    fraction = engine_value - math.floor(engine_value)
    if abs(fraction - 0.5) <= slack:
        return None
    return round_half_up(engine_value)


def order_statistic_levels(n: int, indices: list[int]) -> list[float]:
    """`quantilesExact` levels that return the order statistics at `indices`: ClickHouse
    reads index floor(level * n), and (i + 0.5) / n lands in the middle of index i."""
    return [(i + 0.5) / n for i in indices]


# --- the query --------------------------------------------------------------------------------

# FINAL per partition: all versions of a row share one (its month of finished_at), so
# partitions already merged into one part are read without merging.
_FINAL_SETTINGS = "do_not_merge_across_partitions_select_final = 1"


def _ceil_ms(moment: datetime) -> int:
    """Epoch ms of the first whole millisecond at or after `moment` (rows have ms times)."""
    micros = (moment - EARLIEST) // timedelta(microseconds=1)
    return -(-micros // 1000)


def filter_sql(query: MetricsQuery) -> tuple[str, dict[str, Any]]:
    """WHERE clause and parameters selecting the finished executions a query counts (FINAL
    hides deleted ones; the table holds only success and error)."""
    clause = (
        "workspace_id = {workspace:String}"
        " AND finished_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')"
        " AND finished_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')"
    )
    params: dict[str, Any] = {
        "workspace": query.workspace_id,
        "start_ms": _ceil_ms(query.start),
        "end_ms": _ceil_ms(query.end),
    }
    if query.workflow_id is not None:
        clause += " AND workflow_id = {workflow:String}"
        params["workflow"] = query.workflow_id
    return clause, params


def metrics_sql(database: str, query: MetricsQuery) -> tuple[str, dict[str, Any]]:
    """One pass: per bucket (UTC buckets are equal steps of epoch ms: hour, day,
    Monday-aligned week) count, successful, duration sum, largest duration and the
    durations' quantile state; the outer query sums the buckets and merges the states."""
    where, params = filter_sql(query)
    params["first_ms"] = int(bucket_floor(query.start, query.granularity).timestamp()) * 1000
    params["step_ms"] = int(_STEP[query.granularity].total_seconds()) * 1000
    levels = ", ".join(repr(q / 100) for q in PERCENTILES)
    sql = (
        "SELECT sum(n) AS total, sum(ok) AS successful, sum(d) AS duration_sum,"
        f" max(m) AS longest, quantilesExactInclusiveMerge({levels})(q) AS percentiles,"
        " groupArray(b) AS bucket, groupArray(n) AS bucket_total,"
        " groupArray(ok) AS bucket_successful, groupArray(d) AS bucket_duration"
        " FROM (SELECT"
        " intDiv(toUnixTimestamp64Milli(finished_at) - {first_ms:Int64}, {step_ms:Int64}) AS b,"
        " count() AS n, countIf(status = 'success') AS ok, sum(duration_ms) AS d,"
        f" max(duration_ms) AS m, quantilesExactInclusiveState({levels})(duration_ms) AS q"
        f" FROM {database}.{FINISHED_TABLE} FINAL WHERE {where} GROUP BY b)"
        f" SETTINGS {_FINAL_SETTINGS}"
    )
    return sql, params


def order_statistics_sql(
    database: str, query: MetricsQuery, levels: list[float]
) -> tuple[str, dict[str, Any]]:
    """count() and the durations at `levels` (see order_statistic_levels)."""
    where, params = filter_sql(query)
    level_list = ", ".join(repr(level) for level in levels)
    sql = (
        f"SELECT count() AS total, quantilesExact({level_list})(duration_ms) AS durations"
        f" FROM {database}.{FINISHED_TABLE} FINAL WHERE {where} SETTINGS {_FINAL_SETTINGS}"
    )
    return sql, params


@dataclass(frozen=True)
class Totals:
    """What the one-pass query returns."""

    total: int
    successful: int
    duration_sum: int
    longest: int
    engine_percentiles: list[float]
    bucket_total: list[int]
    bucket_successful: list[int]
    bucket_duration: list[int]


def shape(query: MetricsQuery, totals: Totals, percentiles: Mapping[int, int]) -> dict[str, Any]:
    """The response's `data`."""
    series = []
    for i, start in enumerate(buckets(query.start, query.end, query.granularity)):
        count = totals.bucket_total[i] if i < len(totals.bucket_total) else 0
        ok = totals.bucket_successful[i] if i < len(totals.bucket_successful) else 0
        durations = totals.bucket_duration[i] if i < len(totals.bucket_duration) else 0
        series.append(
            {
                "timestamp": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "count": count,
                "successRate": ratio(ok, count),
                "averageDuration": mean_ms(durations, count),
            }
        )
    return {
        "totalExecutions": totals.total,
        "successfulExecutions": totals.successful,
        "failedExecutions": totals.total - totals.successful,
        "successRate": ratio(totals.successful, totals.total),
        "averageDuration": mean_ms(totals.duration_sum, totals.total),
        **{f"p{q}Duration": percentiles.get(q, 0) for q in PERCENTILES},
        "timeSeries": series,
    }


async def read_totals(ch: AsyncClickHouse, database: str, query: MetricsQuery) -> Totals:
    sql, params = metrics_sql(database, query)
    [row] = await ch.query(sql, params)
    total, successful, duration_sum, longest, engine, *by_bucket = row
    # groupArray lists only buckets with rows, in no particular order; spread them out
    size = bucket_count(query.start, query.end, query.granularity)
    bucket_total, bucket_ok, bucket_duration = [0] * size, [0] * size, [0] * size
    for index, count, ok, duration in zip(*by_bucket, strict=True):
        bucket_total[index], bucket_ok[index], bucket_duration[index] = count, ok, duration
    return Totals(
        total=int(total),
        successful=int(successful),
        duration_sum=int(duration_sum or 0),
        longest=int(longest or 0),
        engine_percentiles=[float(v) for v in engine or ()],
        bucket_total=bucket_total,
        bucket_successful=bucket_ok,
        bucket_duration=bucket_duration,
    )


async def exact_percentiles(
    ch: AsyncClickHouse, database: str, query: MetricsQuery, n: int, wanted: list[int]
) -> dict[int, int] | None:
    """Percentiles `wanted` from the exact order statistics; None when the count is no
    longer n (rows landed meanwhile)."""
    plans = {q: percentile_plan(n, q) for q in wanted}
    indices = sorted({i for p in plans.values() for i in (p.lower, p.upper)})
    sql, params = order_statistics_sql(database, query, order_statistic_levels(n, indices))
    [(count, values)] = await ch.query(sql, params)
    if int(count) != n:
        return None
    by_index = {i: int(v) for i, v in zip(indices, values, strict=True)}
    return {q: round_half_up(interpolate(p, by_index)) for q, p in plans.items()}


async def execution_metrics(
    ch: AsyncClickHouse, database: str, query: MetricsQuery, *, attempts: int = 5
) -> dict[str, Any]:
    """The response's `data` for `query`: usually one read; a second one, of the exact order
    statistics, when a percentile sits on a rounding edge (see settle_percentile)."""
    for _ in range(attempts):
        totals = await read_totals(ch, database, query)
        n = totals.total
        if n == 0:
            return shape(query, totals, {})
        percentiles: dict[int, int] = {}
        unsettled = []
        for q, value in zip(PERCENTILES, totals.engine_percentiles, strict=True):
            settled = settle_percentile(n, q, value, totals.longest)
            if settled is None:
                unsettled.append(q)
            else:
                percentiles[q] = settled
        if unsettled:
            exact = await exact_percentiles(ch, database, query, n, unsettled)
            if exact is None:
                continue
            percentiles.update(exact)
        return shape(query, totals, percentiles)
    raise ClickHouseError("executions kept changing while the metrics were read; try again")
