"""Merging a partial run into the previous result, and the capacity estimate."""

from __future__ import annotations

import pytest

from bench.phases import capacity_estimate
from bench.run import merge

pytestmark = pytest.mark.unit


def test_a_partial_run_replaces_only_what_it_measured() -> None:
    old = {
        "date": "d1",
        "phases": ["metrics", "soak"],
        "latency_ms": {"p50": 30.0, "p95": 60.0, "p99": 90.0},
        "executions_per_s": 150.0,
        "rss_mb": {"api-gateway": 120.0, "metrics": 700.0},
    }
    new = {
        "date": "d2",
        "phases": ["throughput"],
        "executions_per_s": 260.0,
        "rss_mb": {"api-gateway": 110.0, "metrics": 720.0},
    }
    merged = merge(old, new)
    assert merged["executions_per_s"] == 260.0
    assert merged["latency_ms"]["p99"] == 90.0
    assert merged["rss_mb"] == {"api-gateway": 120.0, "metrics": 720.0}
    assert merged["phases"] == ["metrics", "soak", "throughput"]
    assert [r["date"] for r in merged["runs"]] == ["d1", "d2"]
    assert any(t["name"].startswith("sustained") for t in merged["targets"])


def test_capacity_is_the_cores_over_the_stacks_own_cpu_per_execution() -> None:
    per_execution = {"api-gateway": 2.0, "executor-1": 1.0, "kafka": 1.0, "whole machine": 12.0}
    assert capacity_estimate(per_execution, cores=2) == 500.0
    assert capacity_estimate({}, cores=2) is None


def test_marginal_cpu_subtracts_the_idle_baseline() -> None:
    from bench.phases import capacity_from_marginal, marginal_cpu

    idle = {"services_cores": {"api-gateway": 0.02}, "infra_cores": {"kafka": 0.1}}
    busy = {"services_cores": {"api-gateway": 0.42}, "infra_cores": {"kafka": 0.3}}
    marginal = marginal_cpu(busy, idle, per_s=200)
    assert marginal == {"api-gateway": 2.0, "kafka": 1.0}
    assert capacity_from_marginal(marginal, idle) is not None
