"""Rounding and percentiles: what numpy gives, rounded half up, bit for bit."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import numpy as np
import pytest

from jobsprint.metrics.queries import (
    engine_weight,
    interpolate,
    mean_ms,
    order_statistic_levels,
    percentile_plan,
    ratio,
    round_half_up,
    settle_percentile,
)

pytestmark = pytest.mark.unit


def numpy_rounded(values: list[int], q: int) -> int:
    exact = Decimal(float(np.percentile(values, q)))
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 0), (0.49999999999999994, 0), (0.5, 1), (1.5, 2), (2.5, 3), (2.4999, 2), (1234.5, 1235)],
)
def test_round_half_up(value: float, expected: int) -> None:
    assert round_half_up(value) == expected


def test_success_rate_has_four_decimals_rounded_half_up() -> None:
    assert ratio(1187, 1250) == 0.9496  # the spec's example
    assert ratio(1, 3) == 0.3333
    assert ratio(2, 3) == 0.6667
    assert ratio(1, 16) == 0.0625
    assert ratio(1, 32) == 0.0313  # 0.03125: a half, rounded up
    assert ratio(0, 0) == 0.0
    assert ratio(5, 5) == 1.0


def test_average_duration_is_the_mean_rounded_half_up() -> None:
    assert mean_ms(3, 2) == 2  # 1.5
    assert mean_ms(5, 2) == 3  # 2.5, not banker's 2
    assert mean_ms(10, 3) == 3
    assert mean_ms(0, 0) == 0


def percentile(values: list[int], q: int) -> int:
    ordered = sorted(values)
    plan = percentile_plan(len(ordered), q)
    return round_half_up(
        interpolate(plan, {plan.lower: ordered[plan.lower], plan.upper: ordered[plan.upper]})
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 20, 21, 99, 100, 101, 201, 1000, 4099])
def test_percentiles_equal_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    for spread in (3, 100, 60_000):
        values = [int(v) for v in rng.integers(0, spread, size=n)]
        for q in (50, 95, 99):
            assert percentile(values, q) == numpy_rounded(values, q), (n, spread, q)


def test_percentiles_equal_numpy_exactly_before_rounding() -> None:
    rng = np.random.default_rng(1)
    for n in range(1, 400):
        values = sorted(int(v) for v in rng.integers(0, 10_000, size=n))
        for q in (50, 95, 99):
            plan = percentile_plan(n, q)
            got = interpolate(
                plan, {plan.lower: values[plan.lower], plan.upper: values[plan.upper]}
            )
            assert got == float(np.percentile(values, q))  # identical floats, not approximately


def test_halves_round_up() -> None:
    assert percentile([100, 101], 50) == 101  # numpy: 100.5
    assert percentile([1, 2, 3, 4], 50) == 3  # numpy: 2.5


def test_order_statistic_levels_pick_each_index() -> None:
    """ClickHouse's quantileExact reads index floor(level * n)."""
    for n in (1, 2, 3, 7, 10, 1000, 999_983, 10_000_000):
        indices = sorted({0, n // 3, n // 2, n - 1, max(0, n - 2)})
        for i, level in zip(indices, order_statistic_levels(n, indices), strict=True):
            assert 0 < level < 1
            assert math.floor(level * n) == i


def clickhouse_inclusive(ordered: list[int], q: int) -> float:
    """ClickHouse's QuantileExactInclusive::getFloat, operation for operation."""
    n = len(ordered)
    h = (q / 100) * (n - 1) + 1
    m = int(h)
    if m >= n:
        return float(ordered[-1])
    return float(ordered[m - 1]) + (h - m) * (float(ordered[m]) - ordered[m - 1])


def test_engine_weight_is_clickhouses() -> None:
    assert engine_weight(11, 50) == 0.0
    assert engine_weight(12, 50) == 0.5
    assert engine_weight(21, 95) == 0.0


def test_settled_percentiles_equal_numpy_and_edges_are_left_to_the_exact_read() -> None:
    rng = np.random.default_rng(42)
    settled = unsettled = 0
    for n in [*range(1, 300), 1000, 4097, 10_001, 65_537]:
        for spread in (5, 1000, 3_600_000):
            values = sorted(int(v) for v in rng.integers(0, spread, size=n))
            for q in (50, 95, 99):
                got = settle_percentile(n, q, clickhouse_inclusive(values, q), values[-1])
                if got is None:
                    unsettled += 1
                else:
                    settled += 1
                    assert got == numpy_rounded(values, q), (n, spread, q)
    assert unsettled < settled / 20  # the second read is the exception


def test_a_value_on_a_rounding_edge_is_not_settled_from_clickhouse() -> None:
    # n = 21, p95: virtual index 19.0 exactly; n = 41: 38.0; pick one that interpolates
    # with a weight that is not a short binary fraction and a difference that makes .5
    for n in range(3, 400):
        plan = percentile_plan(n, 95)
        if plan.weight in (0.0, 0.5) or (plan.weight * 1024).is_integer():
            continue
        for d in range(1, 200):
            true_fraction = Fraction(round(plan.weight * 10**9), 10**9) * d % 1
            if true_fraction == Fraction(1, 2):
                values = [0] * plan.lower + [1000, 1000 + d] + [10_000] * (n - plan.lower - 2)
                value = clickhouse_inclusive(values, 95)
                assert settle_percentile(n, 95, value, 10_000) is None
                return
    raise AssertionError("no edge case found")
