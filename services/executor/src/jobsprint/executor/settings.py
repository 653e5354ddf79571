"""Executor settings (environment variables with the JOBSPRINT_ prefix)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from jobsprint.executor.limits import EVENT_SETTING, STATE_SETTING, Limit, RecordLimits, lowest
from jobsprint.runtime.kafka import EXECUTOR_STATE_MAX_MESSAGE_BYTES
from jobsprint.runtime.settings import CommonSettings

# the failure events of an execution that got too large (messages of up to 8 K characters,
# a cut input) must still fit
_SMALLEST_RECORD_LIMIT = 262_144


class ExecutorSettings(CommonSettings):
    executor_http_host: str = "127.0.0.1"
    """Address of the executor's health and metrics endpoint."""
    executor_http_port: int = 8092
    """Port of the executor's health and metrics endpoint (/healthz, /readyz, /metrics)."""
    executor_group: str | None = None
    """Kafka consumer group of the executors (default: `<topic_prefix>.executor`)."""
    executor_max_in_flight: int = 2000
    """Executions one process runs concurrently; beyond it, new commands wait in Kafka."""
    executor_commit_interval_ms: int = 10
    """How long events gather before one Kafka transaction commits them (per partition,
    counted from the first event after the last commit). Longer: fewer transactions, each
    a few broker round trips, at the cost of up to this much latency per execution."""
    executor_grace_seconds: float = 20.0
    """On SIGTERM, how long running steps may finish before the process leaves the group."""
    executor_max_event_bytes: int = Field(1_048_576, ge=_SMALLEST_RECORD_LIMIT)
    """Largest event or dead letter the executor writes (one Kafka record, key and value and
    about 100 bytes of framing). An execution whose next event would be larger fails with
    error code `too_large`. The events and dead-letter topics' `max.message.bytes` (read at
    start) lower it."""
    executor_max_state_bytes: int = Field(
        EXECUTOR_STATE_MAX_MESSAGE_BYTES, ge=_SMALLEST_RECORD_LIMIT
    )
    """Largest snapshot of one running execution in the executor-state topic: its input,
    workflow and every step's output so far (kept for templates). An execution whose state
    grows larger fails with error code `too_large`. The executor-state topic's
    `max.message.bytes` (read at start) lowers it."""
    http_allow_list: str = ""
    """Comma-separated hosts, `*.suffix` patterns or CIDRs that `http` steps may reach even
    when they resolve to loopback, private or link-local addresses."""
    http_max_response_bytes: int = 1_048_576
    """Largest response body an `http` step keeps; longer bodies are cut and marked."""

    @property
    def group_id(self) -> str:
        return self.executor_group or f"{self.topic_prefix}.executor"

    def record_limits(self, accepted: Mapping[str, int | None]) -> RecordLimits:
        """The limits, given the `max.message.bytes` each topic accepts."""
        topics = self.topics
        return RecordLimits(
            event=lowest(
                Limit(self.executor_max_event_bytes, EVENT_SETTING),
                accepted,
                [topics.events, topics.dead_letter],
            ),
            state=lowest(
                Limit(self.executor_max_state_bytes, STATE_SETTING),
                accepted,
                [topics.executor_state],
            ),
        )

    def transactional_id(self, partition: int) -> str:
        """One transactional producer per commands partition: a new owner fences the old."""
        return f"{self.group_id}.p{partition}"
