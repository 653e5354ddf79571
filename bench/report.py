"""Targets and the markdown report of a benchmark result (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RSS_LIMITS_MB = {"api-gateway": 200, "executor": 200, "projector": 200, "metrics": 1024}


@dataclass(frozen=True)
class Target:
    name: str
    target: str
    measured: Any
    met: bool | None  # None: not measured in this run

    def row(self) -> str:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[self.met]
        return f"| {self.name} | {self.target} | {_fmt(self.measured)} | {verdict} |"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _at_most(value: Any, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _at_least(value: Any, limit: float) -> bool | None:
    return None if value is None else value >= limit


def rss_limit(service: str) -> int | None:
    for prefix, limit in RSS_LIMITS_MB.items():
        if service == prefix or service.startswith(prefix + "-"):
            return limit
    return None


def targets(result: dict[str, Any]) -> list[Target]:
    eps = result.get("executions_per_s")
    p50 = _get(result, "latency_ms", "p50")
    p99 = _get(result, "latency_ms", "p99")
    list_p99 = _get(result, "list_ms", "worst_p99")
    metrics_p95 = _get(result, "metrics_ms", "p95")
    replay = result.get("replay_events_per_s")
    steady = result.get("steady_events_per_s")
    ratio = round(replay / steady, 1) if replay and steady else None
    lag_growing = _get(result, "throughput", "hold", "lag_growing")
    found = [
        Target(
            "sustained executions/s (2-step transform)",
            "≥ 500 (stretch 1,000)",
            eps,
            _at_least(eps, 500),
        ),
        Target(
            "consumer lag during the hold",
            "not growing",
            None if lag_growing is None else ("growing" if lag_growing else "flat"),
            None if lag_growing is None else not lag_growing,
        ),
        Target(
            "submit→completed p50, half load (waitForCompletion)", "≤ 50 ms", p50, _at_most(p50, 50)
        ),
        Target(
            "submit→completed p99, half load (waitForCompletion)",
            "≤ 250 ms (stretch 100)",
            p99,
            _at_most(p99, 250),
        ),
        Target(
            "list p99 at ≥1M executions, any depth/filter (worst variant)",
            "≤ 50 ms",
            list_p99,
            _at_most(list_p99, 50),
        ),
        Target(
            "metrics p95 at 10M executions (worst query)",
            "≤ 300 ms",
            metrics_p95,
            _at_most(metrics_p95, 300),
        ),
        Target(
            "rebuild replay vs steady event rate",
            "≥ 5x",
            None if ratio is None else f"{ratio}x ({_fmt(replay)} vs {_fmt(steady)} ev/s)",
            _at_least(ratio, 5),
        ),
    ]
    for service, peak in sorted((result.get("rss_mb") or {}).items()):
        limit = rss_limit(service)
        if limit is not None:
            found.append(
                Target(f"peak RSS {service}", f"≤ {limit} MB", peak, _at_most(peak, limit))
            )
    for service, soak in sorted((result.get("soak") or {}).get("rss", {}).items()):
        found.append(
            Target(
                f"RSS growth {service} during the soak",
                "none (≤ 5%)",
                f"{soak['growth_mb']:+.1f} MB ({soak['growth_pct']:+.1f}%)",
                soak["growth_pct"] <= 5.0,
            )
        )
    return found


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Benchmark of {result.get('date', '?')} on {_machine_line(result.get('machine', {}))}",
        "",
        "| measure | target | measured | verdict |",
        "|---|---|---|---|",
        *(t.row() for t in targets(result)),
        "",
        "| figure | value |",
        "|---|---|",
    ]
    figures = [
        ("executions_per_s", result.get("executions_per_s")),
        ("steady_events_per_s", result.get("steady_events_per_s")),
        (
            "CPU ms per execution, stack processes (hold)",
            _cpu_line(_get(result, "throughput", "hold", "cpu_ms_per_execution")),
        ),
        (
            "marginal CPU ms per execution (hold minus idle baseline)",
            _cpu_line(_get(result, "throughput", "hold", "marginal_cpu_ms_per_execution")),
        ),
        (
            "est. executions/s with the box to itself (spare cores / marginal CPU)",
            _get(result, "throughput", "hold", "capacity_marginal_estimate_per_s"),
        ),
        ("latency_ms (waitForCompletion) p50/p95/p99", _triple(result.get("latency_ms"))),
        ("latency_poll_ms (poll GET) p50/p95/p99", _triple(result.get("latency_poll_ms"))),
        (
            "latency_notify_ms (async, read-model commit) p50/p95/p99",
            _triple(result.get("latency_notify_ms")),
        ),
        ("projector_lag_ms p50/p95/p99", _triple(result.get("projector_lag_ms"))),
        ("list_ms p95/p99 (all variants)", _pair(result.get("list_ms"))),
        ("metrics_ms p95 (worst query)", _get(result, "metrics_ms", "p95")),
        ("replay_events_per_s (projector rebuild)", result.get("replay_events_per_s")),
        (
            "rss_mb (peak)",
            ", ".join(f"{k} {v:.0f}" for k, v in sorted((result.get("rss_mb") or {}).items())),
        ),
        ("load average during the run", _get(result, "load", "summary")),
    ]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in figures]
    return "\n".join(lines) + "\n"


def _cpu_line(doc: Any) -> str | None:
    if not isinstance(doc, dict) or not doc:
        return None
    ours = {k: v for k, v in doc.items() if k != "whole machine"}
    total = sum(ours.values())
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(ours.items(), key=lambda kv: -kv[1]))
    return f"{total:.1f} ({parts})"


def _triple(doc: Any) -> str | None:
    if not isinstance(doc, dict) or doc.get("p50") is None:
        return None
    return f"{doc['p50']} / {doc['p95']} / {doc['p99']} ms"


def _pair(doc: Any) -> str | None:
    if not isinstance(doc, dict) or doc.get("p95") is None:
        return None
    return f"{doc['p95']} / {doc['p99']} ms"


def _machine_line(machine: dict[str, Any]) -> str:
    if not machine:
        return "?"
    return f"{machine.get('cores')} cores, {machine.get('memory_gib')} GiB ({machine.get('cpu')})"
