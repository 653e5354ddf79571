"""Statistics of the benchmark (pure): percentiles, summaries, trends, sustainability."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between the closest ranks —
    what `numpy.percentile` gives by default. NaN for no values."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def summarize(values: Sequence[float], digits: int = 1) -> dict[str, float | int | None]:
    """count, mean, p50, p95, p99, p999, max — rounded; None for an empty sample."""
    if not values:
        return {
            "count": 0,
            "mean": None,
            "p50": None,
            "p95": None,
            "p99": None,
            "p999": None,
            "max": None,
        }
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), digits),
        "p50": round(percentile(ordered, 50), digits),
        "p95": round(percentile(ordered, 95), digits),
        "p99": round(percentile(ordered, 99), digits),
        "p999": round(percentile(ordered, 99.9), digits),
        "max": round(ordered[-1], digits),
    }


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope dy/dx of (x, y) points; 0 for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


@dataclass(frozen=True)
class LagTrend:
    slope_per_s: float  # records per second the lag grows by (negative: shrinks)
    first: float
    last: float
    max: float
    growing: bool

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "slope_per_s": round(self.slope_per_s, 2),
            "first": self.first,
            "last": self.last,
            "max": self.max,
            "growing": self.growing,
        }


def lag_trend(
    samples: Sequence[tuple[float, float]], input_rate: float, tolerance: float = 0.02
) -> LagTrend:
    """Whether a consumer keeps up: its lag (records, sampled over time in seconds) is
    `growing` when the fitted slope exceeds `tolerance` of the input rate (records/s) AND
    the lag ends more than one second of input above where it started — a flat lag with
    noise, or a backlog being worked off, is not growing."""
    if not samples:
        return LagTrend(0.0, 0.0, 0.0, 0.0, False)
    fitted = slope(samples)
    first, last = samples[0][1], samples[-1][1]
    growing = fitted > tolerance * max(input_rate, 1.0) and last - first > max(input_rate, 1.0)
    return LagTrend(fitted, first, last, max(y for _, y in samples), growing)


def per_second(times: Iterable[float], start: float, end: float) -> list[int]:
    """How many of `times` fall in each whole second of [start, end)."""
    buckets = [0] * max(0, math.ceil(end - start))
    for t in times:
        if start <= t < end:
            index = int(t - start)
            if index < len(buckets):
                buckets[index] += 1
    return buckets


@dataclass(frozen=True)
class StepVerdict:
    sustainable: bool
    reasons: tuple[str, ...]


def judge_step(
    *,
    offered_rate: float,
    achieved_rate: float,
    completion_rate: float,
    errors: int,
    requests: int,
    lag_growing: bool,
    p99_ms: float | None,
    max_p99_ms: float,
    min_ratio: float = 0.97,
) -> StepVerdict:
    """A rate is sustained when the generator could offer it, (nearly) every request was
    accepted, completions kept pace with arrivals, no consumer fell further behind, and
    the end-to-end p99 stayed bounded (a growing queue shows there first)."""
    reasons = []
    if achieved_rate < min_ratio * offered_rate:
        reasons.append(f"offered only {achieved_rate:.0f}/s of {offered_rate:.0f}/s")
    if requests and errors / requests > 0.001:
        reasons.append(f"{errors} of {requests} requests failed")
    if completion_rate < min_ratio * offered_rate:
        reasons.append(f"completed {completion_rate:.0f}/s of {offered_rate:.0f}/s")
    if lag_growing:
        reasons.append("consumer lag grew")
    if p99_ms is None or p99_ms > max_p99_ms:
        reasons.append(f"end-to-end p99 {p99_ms} ms > {max_p99_ms:.0f} ms")
    return StepVerdict(not reasons, tuple(reasons))
