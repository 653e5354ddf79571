"""Prometheus series every consumer shares. Defined once: the default registry refuses a
second definition of the same name in one process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DEAD_LETTERS = Counter(
    "jobsprint_dead_letters_total",
    "Records a consumer sent to the dead-letter topic.",
    ["consumer"],
)
CONSUMER_LAG = Gauge(
    "jobsprint_consumer_lag",
    "Records of a partition not yet consumed (high watermark minus position).",
    ["consumer", "partition"],
)
