"""Prometheus metrics of the projector, served on `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from jobsprint.runtime.telemetry import CONSUMER_LAG, DEAD_LETTERS

CONSUMER = "projector"

BATCH_SIZE = Histogram(
    "jobsprint_projector_batch_size",
    "Records applied in one Postgres transaction.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "jobsprint_projector_batch_seconds",
    "Time to decode, fold, write and commit one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter(
    "jobsprint_projector_events_total",
    "Events read from the events topic and folded (applied or recognised as redelivered).",
    ["type"],
)
__all__ = ["BATCH_SECONDS", "BATCH_SIZE", "CONSUMER_LAG", "DEAD_LETTERS", "EVENTS"]

DEAD_LETTERS.labels(CONSUMER)  # show 0 from the start, not only after the first one
