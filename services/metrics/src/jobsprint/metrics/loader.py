"""How events become rows of `executions` and `steps`. Pure: envelopes in, row tuples out.

A `Fold` keeps the current state of the executions a batch touches (the consumer hands it a
cache and loads what the cache lacks from ClickHouse). Every row it emits is the row's whole
state, versioned by the `seq` of the last event folded into that row. An event whose `seq` is
not above its row's version was folded before (a redelivery) and changes nothing, so folding
the same events twice writes nothing new, and folding them from a stored state gives the same
rows as folding them from scratch.

Versions are kept per row: step events advance their step's version, execution events the
execution's. Then the order the consumer writes `steps` and `executions` in cannot matter
after a crash: whichever rows made it carry their own versions.

`finished_executions` (what the metrics query reads) holds the executions rows again,
narrowed to the ones that finished with success or error: `finished_rows` gives the new
row of each whose finished row changed (`deleted` once deleted), and a `deleted` row under
the old `finished_at` of one that no longer counts there (another terminal event after the
first). Those rows follow from the executions' states before and after the fold, so the
consumer writes them before `executions` (consumer.py says why).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
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
from jobsprint.metrics.schema import EXECUTION_COLUMNS, FINISHED_COLUMNS, STEP_COLUMNS

COUNTED_STATUSES = ("success", "error")  # what the metrics count, by finished_at
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
ERROR_MESSAGE_MAX = 2000  # characters kept of an error message


class LoadError(Exception):
    """An event that cannot be folded (it goes to the dead-letter topic)."""


class Outcome(Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # folded before: a redelivery
    IGNORED = "ignored"  # nothing to load (a log line, an event of a deleted execution)


@dataclass(slots=True)
class StepState:
    step_id: str
    version: int
    step_name: str
    step_type: str
    position: int
    status: str
    attempts: int
    failed_attempts: int = 0
    reused_from: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    deleted: int = 0


@dataclass(slots=True)
class ExecutionState:
    workspace_id: str
    execution_id: str
    version: int
    workflow_id: str
    workflow_name: str
    workflow_version: int
    status: str
    triggered_by: str
    original_execution_id: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_step_id: str | None = None
    deleted: int = 0
    steps: dict[str, StepState] = field(default_factory=dict)

    def row(self) -> tuple[Any, ...]:
        return (
            self.workspace_id,
            self.execution_id,
            self.version,
            self.workflow_id,
            self.workflow_name,
            self.workflow_version,
            self.status,
            self.triggered_by,
            self.original_execution_id,
            self.created_at,
            self.started_at,
            self.finished_at,
            self.duration_ms,
            self.error_code,
            self.error_message,
            self.error_step_id,
            self.deleted,
        )

    def step_row(self, step: StepState) -> tuple[Any, ...]:
        return (
            self.workspace_id,
            self.execution_id,
            step.step_id,
            step.version,
            self.workflow_id,
            self.created_at,
            step.step_name,
            step.step_type,
            step.position,
            step.status,
            step.attempts,
            step.failed_attempts,
            step.reused_from,
            step.started_at,
            step.finished_at,
            step.duration_ms,
            step.error_code,
            step.error_message,
            step.deleted,
        )


def finished_row(state: ExecutionState) -> tuple[Any, ...] | None:
    """The `finished_executions` row (FINISHED_COLUMNS) of `state`; None unless it finished
    with success or error."""
    if state.status not in COUNTED_STATUSES or state.finished_at is None:
        return None
    return (
        state.workspace_id,
        state.finished_at,
        state.workflow_id,
        state.execution_id,
        state.version,
        state.status,
        state.duration_ms or 0,
        state.deleted,
    )


_FINISHED_AT = FINISHED_COLUMNS.index("finished_at")
_FINISHED_VERSION = FINISHED_COLUMNS.index("version")
_FINISHED_DELETED = FINISHED_COLUMNS.index("deleted")


def execution_from_row(row: Mapping[str, Any]) -> ExecutionState:
    """The state a stored `executions` row holds (columns by name)."""
    values = {name: row[name] for name in EXECUTION_COLUMNS}
    return ExecutionState(**values)


def step_from_row(row: Mapping[str, Any]) -> StepState:
    """The state a stored `steps` row holds (columns by name)."""
    own = set(StepState.__slots__)
    return StepState(**{name: row[name] for name in STEP_COLUMNS if name in own})


class Fold:
    """Folds events, in partition order, into the executions in `known` (execution id ->
    state), which it updates; `rows()` and `finished_rows()` give the rows to write for
    what changed."""

    def __init__(self, known: MutableMapping[str, ExecutionState]) -> None:
        self.known = known
        self._executions: dict[str, None] = {}  # touched, in first-touch order
        self._steps: dict[tuple[str, str], None] = {}
        # finished row of each execution seen, as stored before this fold changed it
        self._finished_before: dict[str, tuple[Any, ...] | None] = {}

    @staticmethod
    def starts_execution(event: Envelope[Payload]) -> bool:
        """True for the first event of an execution, which needs no stored state."""
        return isinstance(event.data, ExecutionRequested) and event.seq == 1

    def apply(self, event: Envelope[Payload]) -> Outcome:
        """Fold one event. LoadError when it cannot apply; then nothing changed."""
        data = event.data
        if not isinstance(data, Event):
            raise LoadError(f"{event.type} is a command, not an event")
        seq = _uint(event.seq, "seq", INT64_MAX)
        _check_numbers(data)
        execution_id = event.execution_id
        state = self.known.get(execution_id)
        if execution_id not in self._finished_before:
            self._finished_before[execution_id] = None if state is None else finished_row(state)
        if isinstance(data, ExecutionRequested):
            if state is not None:
                return Outcome.DUPLICATE
            self.known[execution_id] = new_execution(event, data)
            self._executions[execution_id] = None
            return Outcome.APPLIED
        if isinstance(data, LogRecorded):
            return Outcome.IGNORED
        if state is None:
            if isinstance(data, ExecutionDeleted):
                return Outcome.IGNORED  # nothing loaded, nothing to delete
            raise LoadError(
                f"{event.type} (seq {seq}) for execution {execution_id}, "
                "which has no ExecutionRequested"
            )
        if state.deleted:
            return Outcome.IGNORED
        time = event.time
        match data:
            case StepStarted() | StepCompleted() | StepFailed():
                return self._apply_step(state, data, seq, time)
            case ExecutionCancelled():
                return self._apply_cancelled(state, data, seq, time)
        if seq <= state.version:
            return Outcome.DUPLICATE
        match data:
            case ExecutionStarted():
                state.status = "running"
                state.started_at = time
            case ExecutionSucceeded():
                state.status = "success"
                state.finished_at = time
                state.duration_ms = data.duration_ms
            case ExecutionFailed():
                state.status = "error"
                state.finished_at = time
                state.duration_ms = data.duration_ms
                state.error_code = data.error.code
                state.error_message = _message(data.error)
                state.error_step_id = data.error.step_id
            case ExecutionDeleted():
                state.deleted = 1
                for step in state.steps.values():
                    step.deleted = 1
                    step.version = max(step.version, seq)
                    self._steps[(execution_id, step.step_id)] = None
            case _:
                return Outcome.IGNORED  # an event type the tables do not record
        state.version = seq
        self._executions[execution_id] = None
        return Outcome.APPLIED

    def rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Rows (executions, steps) for everything folded since the last call."""
        executions = [self.known[i].row() for i in self._executions if i in self.known]
        steps = []
        for execution_id, step_id in self._steps:
            state = self.known.get(execution_id)
            if state is not None:
                steps.append(state.step_row(state.steps[step_id]))
        self._executions.clear()
        self._steps.clear()
        return executions, steps

    def finished_rows(self) -> list[tuple[Any, ...]]:
        """Rows of `finished_executions` for everything folded since the last call: the
        current row of each execution whose finished row changed, and a `deleted` row under
        the old `finished_at` of one that no longer counts there."""
        rows = []
        for execution_id, before in self._finished_before.items():
            state = self.known.get(execution_id)
            if state is None:
                continue
            after = finished_row(state)
            if after is not None and after != before:
                rows.append(after)
            if before is not None and (
                after is None or after[_FINISHED_AT] != before[_FINISHED_AT]
            ):
                withdrawn = list(before)
                withdrawn[_FINISHED_VERSION] = state.version
                withdrawn[_FINISHED_DELETED] = 1
                rows.append(tuple(withdrawn))
        self._finished_before.clear()
        return rows

    def _apply_step(
        self,
        state: ExecutionState,
        data: StepStarted | StepCompleted | StepFailed,
        seq: int,
        time: datetime,
    ) -> Outcome:
        step = state.steps.get(data.step_id)
        if step is not None and seq <= step.version:
            return Outcome.DUPLICATE
        attempt = data.attempt
        if step is None:
            # A step event without StepStarted (e.g. a retry's reused step) still gets a row.
            position = data.position if isinstance(data, StepStarted) else 0
            step = StepState(
                step_id=data.step_id,
                version=seq,
                step_name=data.step_name if isinstance(data, StepStarted) else "",
                step_type=data.step_type if isinstance(data, StepStarted) else "",
                position=position,
                status="running",
                attempts=attempt,
                started_at=time if isinstance(data, StepStarted) else None,
            )
            state.steps[data.step_id] = step
        match data:
            case StepStarted():
                step.status = "running"
                step.attempts = attempt
                step.finished_at = None
                step.duration_ms = None
            case StepCompleted():
                step.status = "success"
                step.attempts = attempt
                step.finished_at = time
                step.duration_ms = data.duration_ms
                step.reused_from = data.reused_from
            case StepFailed():
                step.status = "error"
                step.attempts = attempt
                step.failed_attempts += 1
                step.finished_at = time
                step.duration_ms = data.duration_ms
                step.error_code = data.error.code
                step.error_message = _message(data.error)
        step.version = seq
        self._steps[(state.execution_id, step.step_id)] = None
        return Outcome.APPLIED

    def _apply_cancelled(
        self, state: ExecutionState, data: ExecutionCancelled, seq: int, time: datetime
    ) -> Outcome:
        applied = False
        step = state.steps.get(data.step_id) if data.step_id else None
        if step is not None and seq > step.version:
            step.status = "cancelled"
            step.finished_at = time
            step.version = seq
            self._steps[(state.execution_id, step.step_id)] = None
            applied = True
        if seq > state.version:
            state.status = "cancelled"
            state.finished_at = time
            if data.duration_ms is not None:
                state.duration_ms = data.duration_ms
            state.version = seq
            self._executions[state.execution_id] = None
            applied = True
        return Outcome.APPLIED if applied else Outcome.DUPLICATE


def new_execution(event: Envelope[Payload], data: ExecutionRequested) -> ExecutionState:
    return ExecutionState(
        workspace_id=event.workspace_id,
        execution_id=event.execution_id,
        version=event.seq,
        workflow_id=data.workflow_id,
        workflow_name=data.workflow_name,
        workflow_version=data.workflow_version,
        status="pending",
        triggered_by=data.triggered_by,
        original_execution_id=data.original_execution_id,
        created_at=event.time,
    )


_TIMED = (StepCompleted, StepFailed, ExecutionSucceeded, ExecutionFailed, ExecutionCancelled)


def _check_numbers(data: Payload) -> None:
    """Every number the tables store unsigned must fit, before anything changes."""
    if isinstance(data, ExecutionRequested):
        _uint(data.workflow_version, "workflow_version", UINT32_MAX)
    if isinstance(data, StepStarted):
        _uint(data.position, "position", UINT32_MAX)
    if isinstance(data, StepStarted | StepCompleted | StepFailed):
        _uint(data.attempt, "attempt", UINT32_MAX)
    if isinstance(data, _TIMED):  # (getattr on the others would take pydantic's slow miss)
        duration = data.duration_ms
        if duration is not None:
            _uint(duration, "duration_ms", INT64_MAX)


def _message(error: ErrorInfo) -> str:
    return error.message[:ERROR_MESSAGE_MAX]


def _uint(value: int, name: str, top: int) -> int:
    if not 0 <= value <= top:
        raise LoadError(f"{name} {value} is outside 0..{top}")
    return value
