"""The benchmark's statistics: percentiles as numpy gives them, trends, verdicts."""

from __future__ import annotations

import math
import random

import numpy
import pytest

from bench.stats import judge_step, lag_trend, per_second, percentile, slope, summarize

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear_interpolation(q: float) -> None:
    rng = random.Random(q)
    values = [rng.lognormvariate(3, 1) for _ in range(997)]
    assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))


def test_percentile_of_nothing_is_nan_and_of_one_value_is_that_value() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_a_q_outside_0_to_100() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_count_and_rounded_percentiles() -> None:
    summary = summarize([float(x) for x in range(1, 101)])
    assert summary["count"] == 100
    assert summary["p50"] == 50.5
    assert summary["p99"] == 99.0
    assert summary["max"] == 100.0
    assert summarize([])["p99"] is None


def test_slope_of_a_line_and_of_a_single_point() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(1, 4)]) == 0.0


def test_a_flat_noisy_lag_is_not_growing() -> None:
    rng = random.Random(1)
    samples = [(t * 2.0, 40 + rng.randrange(-30, 30)) for t in range(60)]
    assert not lag_trend(samples, input_rate=500).growing


def test_a_lag_that_climbs_with_a_share_of_the_input_is_growing() -> None:
    samples = [(t * 2.0, t * 2.0 * 60) for t in range(60)]  # +60 records/s at 500/s input
    trend = lag_trend(samples, input_rate=500)
    assert trend.growing
    assert trend.slope_per_s == pytest.approx(60)


def test_a_backlog_being_worked_off_is_not_growing() -> None:
    samples = [(t * 2.0, 5000 - t * 80) for t in range(60)]
    assert not lag_trend(samples, input_rate=500).growing


def test_per_second_counts_events_into_whole_seconds_of_the_window() -> None:
    assert per_second([10.1, 10.2, 11.5, 12.9, 13.0, 9.9], 10.0, 13.0) == [2, 1, 1]


def test_a_step_that_keeps_up_is_sustained() -> None:
    verdict = judge_step(
        offered_rate=400,
        achieved_rate=399.5,
        completion_rate=396,
        errors=0,
        requests=12000,
        lag_growing=False,
        p99_ms=120,
        max_p99_ms=1000,
    )
    assert verdict.sustainable and verdict.reasons == ()


def test_a_step_that_falls_behind_says_why() -> None:
    verdict = judge_step(
        offered_rate=800,
        achieved_rate=800,
        completion_rate=610,
        errors=40,
        requests=24000,
        lag_growing=True,
        p99_ms=4000,
        max_p99_ms=1000,
    )
    assert not verdict.sustainable
    assert len(verdict.reasons) == 4
