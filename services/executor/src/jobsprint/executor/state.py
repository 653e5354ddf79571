"""The state of one in-flight execution: what the executor needs to resume it elsewhere.

It travels in the compacted executor-state topic, written in the same Kafka transaction as
the events it summarises, and is removed (tombstone) when the execution ends."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import orjson

from jobsprint.events import ExecuteWorkflow, RetryExecution


@dataclass
class ExecutionState:
    execution_id: str
    workspace_id: str
    correlation_id: str
    workflow_id: str
    workflow_name: str
    workflow_version: int
    workflow: dict[str, Any]
    input: Any
    triggered_by: str
    timeout_s: float
    requested_at: datetime
    original_execution_id: str | None = None
    from_step: str | None = None
    reused: dict[str, dict[str, Any]] = field(default_factory=dict)  # step_id -> ReusedStep
    seq: int = 0  # last event seq emitted
    status: str = "pending"  # pending | running | success | error | cancelled
    started_at: datetime | None = None
    step_index: int | None = None  # the step being run (None before the first / after end)
    step_attempt: int = 0
    step_started_at: datetime | None = None  # of the current attempt, to resume delays
    # outputs in the order the steps ran (steps only run forwards, each at most once)
    step_outputs: dict[str, Any] = field(default_factory=dict)
    persisted: bool = False  # a snapshot exists in the state topic (needs a tombstone)

    @property
    def terminal(self) -> bool:
        return self.status in ("success", "error", "cancelled")

    @property
    def last_output(self) -> Any:
        """The output of the last step that ran. Derived, not stored: the state must fit in
        one Kafka record, so nothing in it is kept twice."""
        return next(reversed(self.step_outputs.values()), None)

    def part_sizes(self) -> dict[str, int]:
        """Bytes of the parts that can make the state large, as JSON (for error messages)."""
        parts = {"input": self.input, "workflow": self.workflow}
        if self.reused:
            parts["reused steps"] = self.reused
        for step_id, output in self.step_outputs.items():
            parts[f"steps.{step_id}.output"] = output
        return {name: len(orjson.dumps(value)) for name, value in parts.items()}

    @classmethod
    def from_command(
        cls,
        command: ExecuteWorkflow | RetryExecution,
        execution_id: str,
        workspace_id: str,
        correlation_id: str,
    ) -> ExecutionState:
        state = cls(
            execution_id=execution_id,
            workspace_id=workspace_id,
            correlation_id=correlation_id,
            workflow_id=command.workflow_id,
            workflow_name=command.workflow_name,
            workflow_version=command.workflow_version,
            workflow=command.workflow,
            input=command.input,
            triggered_by="retry" if isinstance(command, RetryExecution) else command.triggered_by,
            timeout_s=command.timeout_s,
            requested_at=command.requested_at,
        )
        if isinstance(command, RetryExecution):
            state.original_execution_id = command.original_execution_id
            state.from_step = command.from_step
            state.reused = {s.step_id: s.model_dump(mode="json") for s in command.reused_steps}
        return state

    def encode(self) -> bytes:
        # not asdict(): it deep-copies the workflow, the input and every output first
        return orjson.dumps({name: getattr(self, name) for name in _STORED})

    @classmethod
    def decode(cls, raw: bytes) -> ExecutionState:
        doc = orjson.loads(raw)
        doc.pop("last_output", None)  # stored by earlier versions: now derived
        for name in ("requested_at", "started_at", "step_started_at"):
            if doc.get(name):
                doc[name] = datetime.fromisoformat(doc[name])
        return cls(**doc, persisted=True)


_STORED = tuple(f.name for f in fields(ExecutionState) if f.name != "persisted")

# The commands position of a partition travels in the same topic and transactions: the
# executor does not commit consumer-group offsets inside its transactions (two requests and
# a marker less per transaction); it resumes from this record. Its key can never be an
# execution id.
POSITION_KEY = b"jobsprint:commands-position"


def encode_position(next_offset: int) -> bytes:
    return orjson.dumps({"commands_next_offset": next_offset})


def decode_position(raw: bytes) -> int:
    offset = orjson.loads(raw)["commands_next_offset"]
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"invalid commands position {offset!r}")
    return offset
