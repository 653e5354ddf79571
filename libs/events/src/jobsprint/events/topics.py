"""Kafka topic names. Commands and events are co-partitioned (same count, keyed by execution id)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PARTITIONS = 6


@dataclass(frozen=True)
class Topics:
    prefix: str = "jobsprint"

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def executor_state(self) -> str:
        """Compacted changelog of in-flight executions, one record per execution."""
        return f"{self.prefix}.executor-state"

    def all(self) -> tuple[str, ...]:
        return (self.commands, self.events, self.dead_letter, self.executor_state)
