"""The fold rules of the executions read model, on plain rows (no Kafka, no Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobsprint.events import (
    CancelExecution,
    Envelope,
    ErrorInfo,
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
    make,
)
from jobsprint.projector.fold import Changes, Projection, ProjectionError

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
EXEC = "exec_01jgz0000000000000000001"


class History:
    """Events of one execution, numbered from seq 1, one second apart."""

    def __init__(self, execution_id: str = EXEC) -> None:
        self.execution_id = execution_id
        self.events: list[Envelope[Payload]] = []

    def add(self, payload: Payload) -> Envelope[Payload]:
        seq = len(self.events) + 1
        event: Envelope[Payload] = make(
            payload,
            execution_id=self.execution_id,
            workspace_id="ws_1",
            correlation_id=self.execution_id,
            seq=seq,
            time=at(seq),
        )
        self.events.append(event)
        return event

    def requested(self, **fields: Any) -> History:
        defaults: dict[str, Any] = {
            "workflow_id": "wf_1",
            "workflow_name": "Email Auto-Responder",
            "workflow_version": 2,
            "input": {"email": {"from": "user@example.com"}},
            "triggered_by": "webhook",
        }
        self.add(ExecutionRequested(**(defaults | fields)))
        return self

    def started(self) -> History:
        self.add(ExecutionStarted())
        return self

    def step(self, step_id: str, attempt: int = 1, position: int = 0) -> History:
        self.add(
            StepStarted(
                step_id=step_id,
                step_name=f"Step {step_id}",
                step_type="transform",
                position=position,
                attempt=attempt,
                input={"n": attempt},
            )
        )
        return self


def at(seq: int) -> datetime:
    return T0 + timedelta(seconds=seq)


def fold(events: list[Envelope[Payload]], projection: Projection | None = None) -> Changes:
    projection = projection or Projection()
    for event in events:
        projection.apply(event)
    return projection.changes()


def test_requested_creates_a_pending_execution() -> None:
    history = History().requested(
        timeout_s=60.0, original_execution_id="exec_0", from_step="node_2", triggered_by="retry"
    )
    [row] = fold(history.events).executions
    assert row.id == EXEC
    assert row.workspace_id == "ws_1"
    assert (row.workflow_id, row.workflow_name, row.workflow_version) == (
        "wf_1",
        "Email Auto-Responder",
        2,
    )
    assert row.status == "pending"
    assert row.input == {"email": {"from": "user@example.com"}}
    assert row.triggered_by == "retry"
    assert row.timeout_s == 60.0
    assert (row.original_execution_id, row.from_step) == ("exec_0", "node_2")
    assert row.created_at == at(1)
    assert row.started_at is row.finished_at is row.output is row.error is None
    assert row.last_seq == 1


def test_a_successful_run() -> None:
    history = History().requested().started().step("node_1")
    history.add(StepCompleted(step_id="node_1", output={"ok": True}, duration_ms=250))
    history.add(LogRecorded(level="debug", message="done", step_id="node_1", data={"k": 1}))
    history.add(ExecutionSucceeded(output={"sent": True}, duration_ms=4000))
    changes = fold(history.events)

    [execution] = changes.executions
    assert execution.status == "success"
    assert execution.started_at == at(2)
    assert execution.finished_at == at(6)
    assert execution.output == {"sent": True}
    assert execution.duration_ms == 4000
    assert execution.last_seq == 6

    [step] = changes.steps
    assert (step.step_id, step.step_name, step.step_type, step.position) == (
        "node_1",
        "Step node_1",
        "transform",
        0,
    )
    assert step.status == "success"
    assert step.started_seq == 3
    assert step.input == {"n": 1}
    assert step.output == {"ok": True}
    assert (step.started_at, step.finished_at, step.duration_ms) == (at(3), at(4), 250)
    assert step.attempts == 1

    [log] = changes.logs
    assert (log.seq, log.time, log.level, log.message, log.step_id, log.data) == (
        5,
        at(5),
        "debug",
        "done",
        "node_1",
        {"k": 1},
    )
    assert changes.notifications == [f"{EXEC} success"]


def test_a_step_retried_after_a_failure_runs_again_then_succeeds() -> None:
    history = History().requested().started().step("node_2")
    error = ErrorInfo(code="http_status", message="HTTP 503", step_id=None)
    history.add(
        StepFailed(step_id="node_2", attempt=1, error=error, will_retry=True, duration_ms=9)
    )
    failed = fold(history.events).steps[0]
    assert failed.status == "error"
    assert failed.error == {"code": "http_status", "message": "HTTP 503", "stepId": "node_2"}
    assert failed.finished_at == at(4)

    history.step("node_2", attempt=2)
    projection = Projection()
    running = fold(history.events, projection).steps[0]
    assert running.status == "running"
    assert running.attempts == 2
    assert running.error is None
    assert running.finished_at is None
    assert running.started_seq == 3  # run order is the first attempt's
    assert running.started_at == at(3)

    history.add(StepCompleted(step_id="node_2", attempt=2, output=1, duration_ms=5))
    projection.apply(history.events[-1])
    done = projection.changes().steps[0]
    assert (done.status, done.attempts, done.output, done.duration_ms) == ("success", 2, 1, 5)


def test_a_failed_execution_carries_a_camel_case_error() -> None:
    history = History().requested().started()
    history.add(
        ExecutionFailed(
            error=ErrorInfo(code="timeout", message="took too long", step_id="node_3"),
            duration_ms=300000,
        )
    )
    changes = fold(history.events)
    [execution] = changes.executions
    assert execution.status == "error"
    assert execution.error == {"code": "timeout", "message": "took too long", "stepId": "node_3"}
    assert (execution.finished_at, execution.duration_ms) == (at(3), 300000)
    assert changes.notifications == [f"{EXEC} error"]


def test_cancelling_interrupts_the_running_step() -> None:
    history = History().requested().started().step("node_1")
    history.add(ExecutionCancelled(reason="user", step_id="node_1", duration_ms=1500))
    changes = fold(history.events)
    [execution] = changes.executions
    assert execution.status == "cancelled"
    assert execution.cancelled_at == execution.finished_at == at(4)
    assert execution.duration_ms == 1500
    [step] = changes.steps
    assert (step.status, step.finished_at) == ("cancelled", at(4))
    assert changes.notifications == [f"{EXEC} cancelled"]


def test_cancelling_a_pending_execution_has_no_duration() -> None:
    history = History().requested()
    history.add(ExecutionCancelled())
    [execution] = fold(history.events).executions
    assert execution.status == "cancelled"
    assert execution.duration_ms is None
    assert execution.started_at is None


def test_a_redelivered_event_changes_nothing() -> None:
    history = History().requested().started().step("node_1")
    history.add(LogRecorded(message="hello"))
    projection = Projection()
    for event in history.events:
        assert projection.apply(event) is True
    for event in history.events:
        assert projection.apply(event) is False
    changes = projection.changes()
    assert len(changes.logs) == 1
    assert changes.steps[0].attempts == 1
    assert changes.executions[0].last_seq == 4


def test_events_already_in_the_stored_row_are_skipped() -> None:
    history = History().requested().started()
    history.add(ExecutionSucceeded(output=1, duration_ms=10))
    stored = fold(history.events).executions[0]
    projection = Projection([stored])
    assert not any(projection.apply(event) for event in history.events)
    assert not projection.changes()
    assert projection.changes().notifications == []


def test_a_step_event_for_an_unknown_execution_is_refused() -> None:
    orphan = History("exec_unknown").add(
        StepStarted(step_id="s", step_name="S", step_type="log", position=0)
    )
    with pytest.raises(ProjectionError, match="exec_unknown"):
        Projection().apply(orphan)


def test_the_first_event_must_be_the_request() -> None:
    started = History().add(ExecutionStarted())
    with pytest.raises(ProjectionError, match="no ExecutionRequested"):
        Projection().apply(started)


def test_a_completion_of_a_step_that_never_started_is_refused_and_changes_nothing() -> None:
    history = History().requested().started()
    history.add(StepCompleted(step_id="ghost", output=1))
    projection = Projection()
    projection.apply(history.events[0])
    projection.apply(history.events[1])
    with pytest.raises(ProjectionError, match="ghost"):
        projection.apply(history.events[2])
    changes = projection.changes()
    assert changes.steps == []
    assert changes.executions[0].last_seq == 2


def test_a_number_postgres_cannot_store_is_refused() -> None:
    history = History().requested().started()
    history.add(ExecutionSucceeded(duration_ms=2**31))
    projection = Projection()
    projection.apply(history.events[0])
    projection.apply(history.events[1])
    with pytest.raises(ProjectionError, match="duration_ms"):
        projection.apply(history.events[2])
    assert projection.changes().executions[0].status == "running"


def test_a_command_on_the_events_topic_is_refused() -> None:
    history = History().requested()
    command = History().add(CancelExecution(requested_at=T0))
    projection = Projection()
    projection.apply(history.events[0])
    with pytest.raises(ProjectionError, match="not an execution event"):
        projection.apply(command)


def test_deleting_removes_the_execution_its_steps_and_logs() -> None:
    history = History().requested().started().step("node_1")
    history.add(LogRecorded(message="x"))
    history.add(ExecutionSucceeded(duration_ms=1))
    history.add(ExecutionDeleted())
    changes = fold(history.events)
    assert changes.executions == changes.steps == changes.logs == []
    [deleted] = changes.deleted
    assert (deleted.execution_id, deleted.last_seq, deleted.deleted_at) == (EXEC, 6, at(6))
    assert changes.notifications == [f"{EXEC} success", f"{EXEC} deleted"]


def test_a_deleted_execution_stays_deleted_when_its_events_come_again() -> None:
    history = History().requested().started()
    history.add(ExecutionSucceeded(duration_ms=1))
    history.add(ExecutionDeleted())
    deleted = fold(history.events).deleted
    projection = Projection(deleted=deleted)
    assert not any(projection.apply(event) for event in history.events)
    changes = projection.changes()
    assert not changes
    assert changes.notifications == []


def test_executions_fold_independently() -> None:
    a = History("exec_a").requested().started()
    b = History("exec_b").requested()
    changes = fold([a.events[0], b.events[0], a.events[1]])
    assert {(e.id, e.status) for e in changes.executions} == {
        ("exec_a", "running"),
        ("exec_b", "pending"),
    }


def test_the_writes_of_a_fold_never_touch_the_same_row_twice() -> None:
    """The store writes all of a fold's changes in one statement, whose parts share one
    snapshot: an UPDATE there would not see a row an INSERT beside it adds. So new and
    changed rows must be apart, and a deleted execution must have no other write."""
    stored = History("exec_stored").requested().started().step("a")
    stored_then_deleted = History("exec_gone").requested().started().step("a")
    first = fold(stored.events + stored_then_deleted.events)
    projection = Projection(first.executions, first.steps)

    stored.add(StepCompleted(step_id="a", attempt=1, output=1, duration_ms=1))
    stored.step("b", position=1).add(LogRecorded(message="x", step_id="b"))
    stored_then_deleted.add(ExecutionSucceeded(duration_ms=1))
    stored_then_deleted.add(ExecutionDeleted())
    fresh = History("exec_fresh").requested().started().step("a")
    fresh_then_deleted = History("exec_brief").requested().started()
    fresh_then_deleted.add(ExecutionCancelled(duration_ms=1))
    fresh_then_deleted.add(ExecutionDeleted())
    changes = fold(
        stored.events[3:]
        + stored_then_deleted.events[3:]
        + fresh.events
        + fresh_then_deleted.events,
        projection,
    )

    new_ids = {e.id for e in changes.new_executions}
    changed_ids = {e.id for e in changes.changed_executions}
    new_steps = {(s.execution_id, s.step_id) for s in changes.new_steps}
    changed_steps = {(s.execution_id, s.step_id) for s in changes.changed_steps}
    gone = {d.execution_id for d in changes.deleted}
    assert (new_ids, changed_ids) == ({"exec_fresh"}, {"exec_stored"})
    assert new_steps == {("exec_stored", "b"), ("exec_fresh", "a")}
    assert changed_steps == {("exec_stored", "a")}
    assert gone == {"exec_gone", "exec_brief"}
    written = new_ids | changed_ids | {k[0] for k in new_steps | changed_steps}
    assert not written & gone
    assert not {log.execution_id for log in changes.logs} & gone
