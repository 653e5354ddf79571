"""Runs one execution from wherever its state says it is, appending its events.

Every state change is made together with the event that records it, with no await in
between, so a snapshot taken at any await point matches the events emitted so far: a new
owner resumes from the last committed snapshot and may run the step in flight again, but
never shows anything twice."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from functools import lru_cache
from typing import Any

import orjson

from jobsprint.events import (
    ErrorInfo,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    LogRecorded,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    utcnow,
)
from jobsprint.executor import telemetry
from jobsprint.executor.limits import TOO_LARGE, RecordTooLarge
from jobsprint.executor.outbox import Outbox
from jobsprint.executor.state import ExecutionState
from jobsprint.executor.steps import StepEnvironment, run_step
from jobsprint.executor.untrusted import clean_message, clean_value
from jobsprint.workflows import (
    RetryPolicy,
    StepFailure,
    TemplateError,
    WorkflowDefinition,
    build_context,
    final_output,
    next_step_index,
)

log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def _definition(
    workspace_id: str, workflow_id: str, version: int, raw: bytes
) -> WorkflowDefinition:
    """Versions are immutable, so each is validated once per process, not per execution."""
    return WorkflowDefinition.model_validate_json(raw)


class _Stop(Exception):
    """The execution ended (failed); its terminal events are already emitted."""


def _millis(seconds: float) -> int:
    return round(seconds * 1000)


def _log(level: str, message: str, step_id: str | None = None, data: Any = None) -> LogRecorded:
    if data is not None:
        data = clean_value(data)
    return LogRecorded(level=level, message=clean_message(message), step_id=step_id, data=data)


class ExecutionRunner:
    def __init__(self, state: ExecutionState, outbox: Outbox, env: StepEnvironment) -> None:
        self.state = state
        self.outbox = outbox
        self.env = env
        self.definition = _definition(
            state.workspace_id,
            state.workflow_id,
            state.workflow_version,
            orjson.dumps(state.workflow, option=orjson.OPT_SORT_KEYS),
        )

    # -- emitting ---------------------------------------------------------------------------

    def emit(self, *payloads: Payload) -> None:
        """Append events, all or none (RecordTooLarge). Callers emit before they change the
        state, so an event too large to record leaves the state as it was."""
        if self.state.terminal:
            # Cancelled while this coroutine was waiting: nothing may follow the cancellation.
            raise asyncio.CancelledError
        self.outbox.emit(self.state, *payloads)

    def log(self, level: str, message: str, step_id: str | None = None, data: Any = None) -> None:
        self.emit(_log(level, message, step_id, data))

    def elapsed_ms(self) -> int:
        started = self.state.started_at or self.state.requested_at
        return max(0, int((utcnow() - started).total_seconds() * 1000))

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> None:
        state = self.state
        if state.status == "pending":
            state.status = "running"
            state.started_at = utcnow()
            state.step_index = self._first_index()
            self.emit(ExecutionStarted(), _log("info", "Starting workflow execution"))
            telemetry.EXECUTIONS_STARTED.inc()
        assert state.started_at is not None
        deadline = state.started_at + timedelta(seconds=state.timeout_s)
        remaining = (deadline - utcnow()).total_seconds()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                await self._run_steps()
        except TimeoutError:
            self._fail(
                ErrorInfo(
                    code="timeout",
                    message=f"execution exceeded its {state.timeout_s:g} s timeout",
                    step_id=self._current_step_id(),
                ),
                close_step=True,
            )
        except _Stop:
            pass
        except RecordTooLarge as exc:
            self.fail_too_large(exc)

    def fail_too_large(self, exc: RecordTooLarge) -> None:
        """End the execution because what it would write next does not fit in Kafka. The
        failure events are small; a step in flight is closed as failed too."""
        log.warning("execution failed: %s", exc, extra={"execution_id": self.state.execution_id})
        self._fail(
            ErrorInfo(
                code=TOO_LARGE, message=clean_message(str(exc)), step_id=self._current_step_id()
            ),
            close_step=True,
        )

    def _first_index(self) -> int | None:
        return 0 if self.definition.steps else None

    def _current_step_id(self) -> str | None:
        index = self.state.step_index
        return self.definition.steps[index].id if index is not None else None

    async def _run_steps(self) -> None:
        state = self.state
        from_index = (
            self.definition.step_index(state.from_step) if state.from_step is not None else None
        )
        while state.step_index is not None:
            index = state.step_index
            if from_index is not None and index < from_index:
                self._reuse(index)
                continue
            await self._run_one(index)
        self._succeed()

    def _context(self) -> dict[str, Any]:
        state = self.state
        return build_context(
            state.input,
            state.step_outputs,
            {
                "id": state.execution_id,
                "workflowId": state.workflow_id,
                "workflowName": state.workflow_name,
                "workflowVersion": state.workflow_version,
                "triggeredBy": state.triggered_by,
                "startedAt": state.started_at.isoformat() if state.started_at else None,
                "originalExecutionId": state.original_execution_id,
            },
        )

    def _reuse(self, index: int) -> None:
        """A retry skips steps before `from_step`, showing the original's outputs."""
        state = self.state
        step = self.definition.steps[index]
        reused = state.reused.get(step.id)
        if reused is None:  # it did not run in the original either (a condition jumped it)
            state.step_index = next_step_index(self.definition, index, None)
            return
        output = reused.get("output")
        condition = output.get("result") if isinstance(output, dict) else None
        self.emit(
            StepStarted(
                step_id=step.id,
                step_name=step.name,
                step_type=step.type,
                position=index,
                attempt=1,
                input=reused.get("input"),
            ),
            StepCompleted(
                step_id=step.id,
                output=output,
                duration_ms=0,
                reused_from=state.original_execution_id,
            ),
        )
        del state.reused[step.id]  # now in step_outputs: not kept twice
        state.step_outputs[step.id] = output
        state.step_index = next_step_index(
            self.definition, index, bool(condition) if step.type == "condition" else None
        )

    async def _run_one(self, index: int) -> None:
        state = self.state
        step = self.definition.steps[index]
        policy = step.retry or RetryPolicy()
        while True:
            if state.step_attempt == 0 or state.step_started_at is None:
                # not in flight: start the next attempt
                self.emit(
                    StepStarted(
                        step_id=step.id,
                        step_name=step.name,
                        step_type=step.type,
                        position=index,
                        attempt=state.step_attempt + 1,
                        input=step.params,
                    ),
                    _log("info", f"Step {step.id} ({step.name}) started", step.id),
                )
                state.step_attempt += 1
                state.step_started_at = utcnow()
            attempt = state.step_attempt
            began = time.monotonic()
            try:
                runner = run_step(step, self._context(), self.env, state.step_started_at)
                if step.timeout is not None:
                    try:
                        result = await asyncio.wait_for(runner, step.timeout)
                    except TimeoutError:
                        raise StepFailure(
                            "step_timeout",
                            f"step {step.id} exceeded its {step.timeout:g} s timeout",
                            retryable=True,
                        ) from None
                else:
                    result = await runner
            except (StepFailure, TemplateError) as exc:
                failure = (
                    exc if isinstance(exc, StepFailure) else StepFailure("template_error", str(exc))
                )
                duration = _millis(time.monotonic() - began)
                will_retry = failure.retryable and attempt < policy.maxAttempts
                error = ErrorInfo(
                    code=failure.code, message=clean_message(failure.message), step_id=step.id
                )
                state.step_started_at = None
                self.emit(
                    StepFailed(
                        step_id=step.id,
                        attempt=attempt,
                        error=error,
                        will_retry=will_retry,
                        duration_ms=duration,
                    )
                )
                self.log("error", f"Step {step.id} failed: {failure.message}", step.id)
                telemetry.step_seconds(step.type, "error").observe(duration / 1000)
                if will_retry:
                    await asyncio.sleep(policy.delay_before_attempt(attempt + 1))
                    continue
                self._fail(error)
                raise _Stop from None
            duration = _millis(time.monotonic() - began)
            if result.log is not None:
                level, message, data = result.log
                self.log(level, message, step.id, data)
            output = clean_value(result.output)  # what later steps see is what is stored
            self.emit(
                StepCompleted(
                    step_id=step.id, attempt=attempt, output=output, duration_ms=duration
                ),
                _log("info", f"Step {step.id} completed", step.id, {"durationMs": duration}),
            )
            state.step_outputs[step.id] = output
            state.step_index = next_step_index(self.definition, index, result.condition)
            state.step_attempt = 0
            state.step_started_at = None
            telemetry.step_seconds(step.type, "success").observe(duration / 1000)
            return

    def _succeed(self) -> None:
        state = self.state
        try:
            output = clean_value(final_output(self.definition, self._context(), state.last_output))
        except TemplateError as exc:
            self._fail(ErrorInfo(code="template_error", message=clean_message(f"output: {exc}")))
            return
        duration = self.elapsed_ms()
        self.emit(
            _log("info", "Workflow execution completed successfully"),
            ExecutionSucceeded(output=output, duration_ms=duration),
        )
        state.status = "success"
        telemetry.executions_finished("success").inc()

    def _fail(self, error: ErrorInfo, close_step: bool = False) -> None:
        """End the execution with `error`; `close_step`: a step in flight fails with it."""
        state = self.state
        if state.terminal:
            return
        if close_step and state.step_started_at is not None and error.step_id:
            self.emit(
                StepFailed(
                    step_id=error.step_id,
                    attempt=state.step_attempt,
                    error=error,
                    will_retry=False,
                    duration_ms=max(
                        0, int((utcnow() - state.step_started_at).total_seconds() * 1000)
                    ),
                )
            )
        self.emit(
            _log("error", f"Workflow execution failed: {error.message}", error.step_id),
            ExecutionFailed(error=error, duration_ms=self.elapsed_ms()),
        )
        state.status = "error"
        telemetry.executions_finished("error").inc()
