"""Executor settings (environment variables with the JOBSPRINT_ prefix)."""

from __future__ import annotations

from jobsprint.runtime.settings import CommonSettings


class ExecutorSettings(CommonSettings):
    executor_http_host: str = "127.0.0.1"
    """Address of the executor's health and metrics endpoint."""
    executor_http_port: int = 8092
    """Port of the executor's health and metrics endpoint (/healthz, /readyz, /metrics)."""
    executor_group: str | None = None
    """Kafka consumer group of the executors (default: `<topic_prefix>.executor`)."""
    executor_max_in_flight: int = 2000
    """Executions one process runs concurrently; beyond it, new commands wait in Kafka."""
    executor_commit_interval_ms: int = 5
    """How long events gather before one Kafka transaction commits them."""
    executor_grace_seconds: float = 20.0
    """On SIGTERM, how long running steps may finish before the process leaves the group."""
    http_allow_list: str = ""
    """Comma-separated hosts, `*.suffix` patterns or CIDRs that `http` steps may reach even
    when they resolve to loopback, private or link-local addresses."""
    http_max_response_bytes: int = 1_048_576
    """Largest response body an `http` step keeps; longer bodies are cut and marked."""

    @property
    def group_id(self) -> str:
        return self.executor_group or f"{self.topic_prefix}.executor"

    def transactional_id(self, partition: int) -> str:
        """One transactional producer per commands partition: a new owner fences the old."""
        return f"{self.group_id}.p{partition}"
