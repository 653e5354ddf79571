"""Events: facts the executor appends to the events topic. Times are the envelope's `time`."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from jobsprint.events.commands import TriggeredBy
from jobsprint.events.registry import Payload, register

LogLevel = Literal["debug", "info", "warn", "error"]
TERMINAL_STATUSES = frozenset({"success", "error", "cancelled"})


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    code: str
    message: str
    step_id: str | None = None


class Event(Payload):
    KIND: ClassVar[str] = "event"


@register
class ExecutionRequested(Event):
    TYPE: ClassVar[str] = "execution.requested.v1"
    workflow_id: str
    workflow_name: str
    workflow_version: int
    input: Any = None
    triggered_by: TriggeredBy = "api"
    timeout_s: float = 300.0
    original_execution_id: str | None = None
    from_step: str | None = None


@register
class ExecutionStarted(Event):
    TYPE: ClassVar[str] = "execution.started.v1"


@register
class StepStarted(Event):
    TYPE: ClassVar[str] = "execution.step_started.v1"
    step_id: str
    step_name: str
    step_type: str
    position: int  # index of the step in the workflow definition
    attempt: int = 1
    input: Any = None


@register
class StepCompleted(Event):
    TYPE: ClassVar[str] = "execution.step_completed.v1"
    step_id: str
    attempt: int = 1
    output: Any = None
    duration_ms: int = 0
    reused_from: str | None = None  # set when a retry reused the original execution's output


@register
class StepFailed(Event):
    TYPE: ClassVar[str] = "execution.step_failed.v1"
    step_id: str
    attempt: int = 1
    error: ErrorInfo
    will_retry: bool = False
    duration_ms: int = 0


@register
class LogRecorded(Event):
    TYPE: ClassVar[str] = "execution.log_recorded.v1"
    level: LogLevel = "info"
    message: str
    step_id: str | None = None
    data: Any = None


@register
class ExecutionSucceeded(Event):
    TYPE: ClassVar[str] = "execution.succeeded.v1"
    output: Any = None
    duration_ms: int


@register
class ExecutionFailed(Event):
    TYPE: ClassVar[str] = "execution.failed.v1"
    error: ErrorInfo
    duration_ms: int


@register
class ExecutionCancelled(Event):
    TYPE: ClassVar[str] = "execution.cancelled.v1"
    reason: str = "cancelled by request"
    step_id: str | None = None  # the step that was interrupted, if one was running
    duration_ms: int | None = None  # None when it never started


@register
class ExecutionDeleted(Event):
    TYPE: ClassVar[str] = "execution.deleted.v1"
