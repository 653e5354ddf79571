"""Commands: requests to the executor, on the commands topic, keyed by execution id."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from jobsprint.events.registry import Payload, register

TriggeredBy = Literal["api", "webhook", "retry"]


class ReusedStep(BaseModel):
    """A step of the original execution whose output a retry reuses instead of running it."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    step_id: str
    step_name: str
    step_type: str
    input: Any = None
    output: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Command(Payload):
    KIND: ClassVar[str] = "command"


@register
class ExecuteWorkflow(Command):
    TYPE: ClassVar[str] = "execution.execute.v1"
    workflow_id: str
    workflow_name: str
    workflow_version: int
    workflow: dict[str, Any]  # snapshot of the definition this execution runs
    input: Any = None
    triggered_by: TriggeredBy = "api"
    timeout_s: float = 300.0
    requested_at: datetime


@register
class RetryExecution(Command):
    """Run a new execution that continues an earlier one from `from_step`."""

    TYPE: ClassVar[str] = "execution.retry.v1"
    workflow_id: str
    workflow_name: str
    workflow_version: int
    workflow: dict[str, Any]
    input: Any = None
    timeout_s: float = 300.0
    requested_at: datetime
    original_execution_id: str
    from_step: str
    reused_steps: tuple[ReusedStep, ...] = ()


@register
class CancelExecution(Command):
    TYPE: ClassVar[str] = "execution.cancel.v1"
    requested_at: datetime
    reason: str = "cancelled by request"


@register
class DeleteExecution(Command):
    """Delete a finished execution. `last_seq` is the last event seq the requester saw."""

    TYPE: ClassVar[str] = "execution.delete.v1"
    requested_at: datetime
    last_seq: int
