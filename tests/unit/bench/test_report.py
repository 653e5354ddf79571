"""Targets and the markdown table of a result."""

from __future__ import annotations

import pytest

from bench.report import markdown, rss_limit, targets

pytestmark = pytest.mark.unit

RESULT = {
    "date": "2026-11-27T01:00:00Z",
    "machine": {"cores": 2, "memory_gib": 23.5, "cpu": "Xeon"},
    "executions_per_s": 420.0,
    "steady_events_per_s": 5460.0,
    "latency_ms": {"p50": 31.0, "p95": 80.0, "p99": 140.0},
    "list_ms": {"p95": 9.0, "p99": 14.0, "worst_p99": 61.0},
    "metrics_ms": {"p95": 120.0},
    "replay_events_per_s": 30000.0,
    "rss_mb": {"api-gateway": 90.0, "executor-1": 60.0, "metrics": 1100.0},
    "throughput": {"hold": {"lag_growing": False}},
    "soak": {"rss": {"projector": {"growth_mb": 0.4, "growth_pct": 0.7}}},
}


def verdicts() -> dict[str, bool | None]:
    return {t.name: t.met for t in targets(RESULT)}


def test_each_target_is_judged_against_the_issue() -> None:
    found = verdicts()
    assert found["sustained executions/s (2-step transform)"] is False
    assert found["submit→completed p99, half load (waitForCompletion)"] is True
    assert found["list p99 at ≥1M executions, any depth/filter (worst variant)"] is False
    assert found["metrics p95 at 10M executions (worst query)"] is True
    assert found["rebuild replay vs steady event rate"] is True  # 5.5x
    assert found["peak RSS metrics"] is False
    assert found["RSS growth projector during the soak"] is True


def test_unmeasured_figures_are_not_reported_as_met() -> None:
    found = {t.name: t.met for t in targets({"rss_mb": {}})}
    assert found["sustained executions/s (2-step transform)"] is None


def test_rss_limits_by_service_name() -> None:
    assert rss_limit("executor-2") == 200
    assert rss_limit("metrics") == 1024
    assert rss_limit("kafka") is None


def test_markdown_shows_the_machine_the_verdicts_and_the_figures() -> None:
    table = markdown(RESULT)
    assert "2 cores, 23.5 GiB" in table
    assert "| sustained executions/s (2-step transform) | ≥ 500 (stretch 1,000) | 420.0 |" in table
    assert "**missed**" in table
    assert "31.0 / 80.0 / 140.0 ms" in table


def test_the_cpu_budget_line_lists_the_heaviest_process_first() -> None:
    result = {
        **RESULT,
        "throughput": {
            "hold": {
                "lag_growing": False,
                "cpu_ms_per_execution": {"projector": 0.8, "api-gateway": 2.0, "whole machine": 9},
                "capacity_estimate_per_s": 714.3,
            }
        },
    }
    table = markdown(result)
    assert (
        "| CPU ms per execution, stack processes (hold) | 2.8 (api-gateway 2.00, projector" in table
    )
    assert "marginal CPU ms per execution" in table
