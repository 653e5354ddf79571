"""Prometheus instruments of the metrics service, in a registry of its own (so a test process
that imports several services never registers a name twice). `/metrics` serves it."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

CONSUMER = "metrics"  # the `consumer` label shared with the other services' instruments

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

EVENTS = Counter(
    "jobsprint_metrics_events_total",
    "Events read from the events topic, by what folding them did",
    ["outcome"],  # applied, duplicate, ignored, dead_lettered
    registry=REGISTRY,
)
ROWS_LOADED = Counter(
    "jobsprint_metrics_rows_loaded_total",
    "Rows inserted into ClickHouse",
    ["table"],
    registry=REGISTRY,
)
BATCH_EVENTS = Histogram(
    "jobsprint_metrics_batch_events",
    "Events per loaded batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000),
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "jobsprint_metrics_batch_seconds",
    "Time to fold, insert and checkpoint one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
LAG = Gauge(
    "jobsprint_consumer_lag",
    "Events in the partition not yet loaded (high watermark - next offset)",
    ["consumer", "partition"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "jobsprint_dead_letters_total",
    "Messages sent to the dead-letter topic",
    ["consumer"],
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "jobsprint_metrics_query_seconds",
    "Time to answer GET /v1/metrics",
    ["granularity"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
