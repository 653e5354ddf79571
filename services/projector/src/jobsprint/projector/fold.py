"""How events change the executions read model. Pure: plain rows in, plain rows out, no I/O.

A `Projection` holds the rows one batch of events touches. The store loads it, events are
folded into it in order, and `changes()` says which rows to write. Every event applies at
most once per execution: an event whose `seq` is not above the execution's `last_seq` is a
redelivery and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobsprint.events import (
    Envelope,
    ErrorInfo,
    Event,
    ExecutionCancelled,
    ExecutionDeleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    LogRecorded,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
)

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1  # the read model's int columns
NOTIFY_DELETED = "deleted"


class ProjectionError(Exception):
    """An event that cannot apply to the read model; it goes to the dead-letter topic."""


@dataclass(slots=True)
class ExecutionRow:
    """A row of `executions`. `input` is set once, by ExecutionRequested: the fold never
    reads or changes it on a stored row (the store neither loads nor rewrites it)."""

    id: str
    workspace_id: str
    workflow_id: str
    workflow_name: str
    workflow_version: int
    status: str
    triggered_by: str
    input: Any
    output: Any
    error: Any
    original_execution_id: str | None
    from_step: str | None
    timeout_s: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    duration_ms: int | None
    last_seq: int


@dataclass(slots=True)
class StepRow:
    """A row of `execution_steps`; `input` is its first attempt's, set once like the
    execution's."""

    execution_id: str
    step_id: str
    started_seq: int
    position: int
    step_name: str
    step_type: str
    status: str
    attempts: int
    input: Any
    output: Any
    error: Any
    reused_from: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None


@dataclass(frozen=True, slots=True)
class LogRow:
    execution_id: str
    seq: int
    time: datetime
    level: str
    message: str
    step_id: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class DeletedExecution:
    """What is left of a deleted execution: later redeliveries of its events are ignored."""

    execution_id: str
    last_seq: int
    deleted_at: datetime


@dataclass(slots=True)
class Changes:
    """Rows to write after a fold, and the notifications to send once they are committed.
    Rows the store loaded are `changed` (updated in place); the others are `new`."""

    new_executions: list[ExecutionRow] = field(default_factory=list)
    changed_executions: list[ExecutionRow] = field(default_factory=list)
    new_steps: list[StepRow] = field(default_factory=list)
    changed_steps: list[StepRow] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)  # insert
    deleted: list[DeletedExecution] = field(default_factory=list)  # delete rows, keep marker
    notifications: list[str] = field(default_factory=list)  # "<execution_id> <status>"

    @property
    def executions(self) -> list[ExecutionRow]:
        return self.new_executions + self.changed_executions

    @property
    def steps(self) -> list[StepRow]:
        return self.new_steps + self.changed_steps

    def __bool__(self) -> bool:
        return bool(self.executions or self.steps or self.logs or self.deleted)


class Projection:
    """The part of the read model a batch of events touches, folded in memory."""

    def __init__(
        self,
        executions: list[ExecutionRow] | None = None,
        steps: list[StepRow] | None = None,
        deleted: list[DeletedExecution] | None = None,
    ) -> None:
        self.executions: dict[str, ExecutionRow] = {e.id: e for e in executions or ()}
        self.steps: dict[tuple[str, str], StepRow] = {
            (s.execution_id, s.step_id): s for s in steps or ()
        }
        self.deleted: dict[str, DeletedExecution] = {d.execution_id: d for d in deleted or ()}
        self._stored_executions = set(self.executions)
        self._stored_steps = set(self.steps)
        # dicts keep first-touch order, so writes and notifications follow the events
        self._touched_executions: dict[str, None] = {}
        self._touched_steps: dict[tuple[str, str], None] = {}
        self._logs: list[LogRow] = []
        self._deleted_now: dict[str, DeletedExecution] = {}
        self._notifications: list[str] = []

    def apply(self, event: Envelope[Payload]) -> bool:
        """Fold one event. False when it changes nothing: already applied (redelivered), or
        its execution was deleted. ProjectionError when it cannot apply; then nothing
        changed."""
        data = event.data
        execution_id = event.execution_id
        if not isinstance(data, Event):
            raise ProjectionError(f"{event.type} is not an execution event")
        _check_int(event.seq, "seq")
        if execution_id in self.deleted:
            return False
        if isinstance(data, ExecutionRequested):
            if execution_id in self.executions:
                return False
            self.executions[execution_id] = new_execution(event, data)
            self._touched_executions[execution_id] = None
            return True
        execution = self.executions.get(execution_id)
        if execution is None:
            raise ProjectionError(
                f"{event.type} (seq {event.seq}) for execution {execution_id}, "
                "which has no ExecutionRequested"
            )
        if event.seq <= execution.last_seq:
            return False
        time = event.time
        match data:
            case ExecutionStarted():
                apply_execution_started(execution, time)
            case StepStarted():
                self._apply_step_started(execution, data, event.seq, time)
            case StepCompleted():
                apply_step_completed(self._step(execution, data.step_id, event), data, time)
                self._touched_steps[(execution_id, data.step_id)] = None
            case StepFailed():
                apply_step_failed(self._step(execution, data.step_id, event), data, time)
                self._touched_steps[(execution_id, data.step_id)] = None
            case LogRecorded():
                self._logs.append(new_log(execution, data, event.seq, time))
            case ExecutionSucceeded():
                apply_execution_succeeded(execution, data, time)
            case ExecutionFailed():
                apply_execution_failed(execution, data, time)
            case ExecutionCancelled():
                step = self.steps.get((execution_id, data.step_id)) if data.step_id else None
                apply_execution_cancelled(execution, step, data, time)
                if step is not None:
                    self._touched_steps[(execution_id, step.step_id)] = None
            case ExecutionDeleted():
                self._delete(execution, event.seq, time)
                return True
            case _:
                raise ProjectionError(f"{event.type} has no projection")
        execution.last_seq = event.seq
        self._touched_executions[execution_id] = None
        if isinstance(data, ExecutionSucceeded | ExecutionFailed | ExecutionCancelled):
            self._notifications.append(f"{execution_id} {execution.status}")
        return True

    def changes(self) -> Changes:
        """The rows to write for everything applied so far."""
        gone = self._deleted_now
        executions = [i for i in self._touched_executions if i not in gone]
        steps = [k for k in self._touched_steps if k[0] not in gone]
        return Changes(
            new_executions=[
                self.executions[i] for i in executions if i not in self._stored_executions
            ],
            changed_executions=[
                self.executions[i] for i in executions if i in self._stored_executions
            ],
            new_steps=[self.steps[k] for k in steps if k not in self._stored_steps],
            changed_steps=[self.steps[k] for k in steps if k in self._stored_steps],
            logs=[log for log in self._logs if log.execution_id not in gone],
            deleted=list(gone.values()),
            notifications=list(self._notifications),
        )

    def _step(self, execution: ExecutionRow, step_id: str, event: Envelope[Payload]) -> StepRow:
        step = self.steps.get((execution.id, step_id))
        if step is None:
            raise ProjectionError(
                f"{event.type} (seq {event.seq}) for step {step_id!r} of execution "
                f"{execution.id}, which has no StepStarted"
            )
        return step

    def _apply_step_started(
        self, execution: ExecutionRow, data: StepStarted, seq: int, time: datetime
    ) -> None:
        _check_int(data.position, "position")
        _check_int(data.attempt, "attempt")
        key = (execution.id, data.step_id)
        step = self.steps.get(key)
        if step is None:
            self.steps[key] = new_step(execution, data, seq, time)
        else:
            apply_step_restarted(step, data)
        self._touched_steps[key] = None

    def _delete(self, execution: ExecutionRow, seq: int, time: datetime) -> None:
        marker = DeletedExecution(execution.id, seq, time)
        del self.executions[execution.id]
        self.deleted[execution.id] = marker
        self._deleted_now[execution.id] = marker
        self._notifications.append(f"{execution.id} {NOTIFY_DELETED}")


def new_execution(event: Envelope[Payload], data: ExecutionRequested) -> ExecutionRow:
    _check_int(data.workflow_version, "workflow_version")
    return ExecutionRow(
        id=event.execution_id,
        workspace_id=event.workspace_id,
        workflow_id=data.workflow_id,
        workflow_name=data.workflow_name,
        workflow_version=data.workflow_version,
        status="pending",
        triggered_by=data.triggered_by,
        input=data.input,
        output=None,
        error=None,
        original_execution_id=data.original_execution_id,
        from_step=data.from_step,
        timeout_s=data.timeout_s,
        created_at=event.time,
        started_at=None,
        finished_at=None,
        cancelled_at=None,
        duration_ms=None,
        last_seq=event.seq,
    )


def apply_execution_started(execution: ExecutionRow, time: datetime) -> None:
    execution.status = "running"
    execution.started_at = time


def new_step(execution: ExecutionRow, data: StepStarted, seq: int, time: datetime) -> StepRow:
    return StepRow(
        execution_id=execution.id,
        step_id=data.step_id,
        started_seq=seq,
        position=data.position,
        step_name=data.step_name,
        step_type=data.step_type,
        status="running",
        attempts=data.attempt,
        input=data.input,
        output=None,
        error=None,
        reused_from=None,
        started_at=time,
        finished_at=None,
        duration_ms=None,
    )


def apply_step_restarted(step: StepRow, data: StepStarted) -> None:
    """A later attempt of a step that already ran: running again, the last error cleared."""
    step.status = "running"
    step.attempts = data.attempt
    step.error = None
    step.finished_at = None
    step.duration_ms = None


def apply_step_completed(step: StepRow, data: StepCompleted, time: datetime) -> None:
    _check_int(data.attempt, "attempt")
    _check_int(data.duration_ms, "duration_ms")
    step.status = "success"
    step.output = data.output
    step.attempts = data.attempt
    step.finished_at = time
    step.duration_ms = data.duration_ms
    step.reused_from = data.reused_from


def apply_step_failed(step: StepRow, data: StepFailed, time: datetime) -> None:
    _check_int(data.attempt, "attempt")
    _check_int(data.duration_ms, "duration_ms")
    step.status = "error"
    step.error = error_document(data.error, default_step_id=data.step_id)
    step.attempts = data.attempt
    step.finished_at = time
    step.duration_ms = data.duration_ms


def new_log(execution: ExecutionRow, data: LogRecorded, seq: int, time: datetime) -> LogRow:
    return LogRow(
        execution_id=execution.id,
        seq=seq,
        time=time,
        level=data.level,
        message=data.message,
        step_id=data.step_id,
        data=data.data,
    )


def apply_execution_succeeded(
    execution: ExecutionRow, data: ExecutionSucceeded, time: datetime
) -> None:
    _check_int(data.duration_ms, "duration_ms")
    execution.status = "success"
    execution.output = data.output
    execution.finished_at = time
    execution.duration_ms = data.duration_ms


def apply_execution_failed(execution: ExecutionRow, data: ExecutionFailed, time: datetime) -> None:
    _check_int(data.duration_ms, "duration_ms")
    execution.status = "error"
    execution.error = error_document(data.error)
    execution.finished_at = time
    execution.duration_ms = data.duration_ms


def apply_execution_cancelled(
    execution: ExecutionRow, step: StepRow | None, data: ExecutionCancelled, time: datetime
) -> None:
    """`step` is the interrupted step when the event names one the read model knows."""
    if data.duration_ms is not None:
        _check_int(data.duration_ms, "duration_ms")
    execution.status = "cancelled"
    execution.cancelled_at = time
    execution.finished_at = time
    execution.duration_ms = data.duration_ms
    if step is not None:
        step.status = "cancelled"
        step.finished_at = time


def error_document(error: ErrorInfo, default_step_id: str | None = None) -> dict[str, Any]:
    """The error as the API shows it: camelCase keys."""
    step_id = error.step_id if error.step_id is not None else default_step_id
    return {"code": error.code, "message": error.message, "stepId": step_id}


def _check_int(value: int, name: str) -> None:
    """Postgres would refuse the whole batch over one out-of-range number: refuse the event."""
    if not INT4_MIN <= value <= INT4_MAX:
        raise ProjectionError(f"{name} {value} does not fit a 32-bit integer")
