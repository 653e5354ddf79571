"""Prometheus series of the executor."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from jobsprint.runtime.telemetry import CONSUMER_LAG, DEAD_LETTERS

__all__ = [
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EXECUTIONS_FINISHED",
    "EXECUTIONS_STARTED",
    "IN_FLIGHT",
    "STEP_SECONDS",
    "TRANSACTION_SECONDS",
    "executions_finished",
    "step_seconds",
]

EXECUTIONS_STARTED = Counter(
    "jobsprint_executions_started_total", "Executions this executor started"
)
EXECUTIONS_FINISHED = Counter(
    "jobsprint_executions_finished_total", "Executions finished, by status", ["status"]
)
STEP_SECONDS = Histogram(
    "jobsprint_step_duration_seconds",
    "Step run time by step type and outcome",
    ["step_type", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
IN_FLIGHT = Gauge("jobsprint_executor_in_flight", "Executions running in this process")
TRANSACTION_SECONDS = Histogram(
    "jobsprint_executor_transaction_seconds",
    "Time to commit one Kafka transaction of events",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5),
)


# labels() checks its values and takes the metric's lock on every call: the executor looks
# each series up once (a handful: outcomes times step types).


@cache
def step_seconds(step_type: str, outcome: str) -> Histogram:
    return STEP_SECONDS.labels(step_type, outcome)


@cache
def executions_finished(status: str) -> Counter:
    return EXECUTIONS_FINISHED.labels(status)
