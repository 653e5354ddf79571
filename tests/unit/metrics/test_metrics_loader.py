"""Events to rows: the mapping, per-row versions, and redelivery writing nothing new."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobsprint.events import (
    DeleteExecution,
    Envelope,
    ErrorInfo,
    ExecutionCancelled,
    ExecutionDeleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    LogRecorded,
    StepCompleted,
    StepFailed,
    StepStarted,
    make,
)
from jobsprint.metrics.loader import (
    ExecutionState,
    Fold,
    LoadError,
    Outcome,
    execution_from_row,
    step_from_row,
)
from jobsprint.metrics.schema import EXECUTION_COLUMNS, STEP_COLUMNS

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
EXEC = "exec_01jgz0000000000000000001"
WS = "ws_1"


def event(seq: int, payload: Any, ms: int = 0, execution_id: str = EXEC) -> Envelope[Any]:
    return make(
        payload,
        execution_id=execution_id,
        workspace_id=WS,
        correlation_id=execution_id,
        seq=seq,
        time=T0 + timedelta(milliseconds=ms),
    )


def history() -> list[Envelope[Any]]:
    error = ErrorInfo(code="http_status", message="HTTP 503", step_id="s1")
    return [
        event(
            1,
            ExecutionRequested(
                workflow_id="wf_1", workflow_name="Mail", workflow_version=3, triggered_by="webhook"
            ),
        ),
        event(2, ExecutionStarted(), 5),
        event(3, StepStarted(step_id="s1", step_name="Fetch", step_type="http", position=0), 6),
        event(4, StepFailed(step_id="s1", error=error, will_retry=True, duration_ms=20), 26),
        event(
            5,
            StepStarted(step_id="s1", step_name="Fetch", step_type="http", position=0, attempt=2),
            30,
        ),
        event(6, StepCompleted(step_id="s1", attempt=2, duration_ms=40), 70),
        event(7, LogRecorded(message="fetched"), 71),
        event(
            8, StepStarted(step_id="s2", step_name="Send", step_type="transform", position=1), 72
        ),
        event(9, StepCompleted(step_id="s2", duration_ms=3), 75),
        event(10, ExecutionSucceeded(duration_ms=80), 85),
    ]


def rows_by_name(rows: list[tuple[Any, ...]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def fold_all(
    events: list[Envelope[Any]], known: dict[str, ExecutionState] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Outcome]]:
    fold = Fold({} if known is None else known)
    outcomes = [fold.apply(e) for e in events]
    executions, steps = fold.rows()
    return rows_by_name(executions, EXECUTION_COLUMNS), rows_by_name(steps, STEP_COLUMNS), outcomes


def test_a_successful_execution_becomes_one_row_and_one_row_per_step() -> None:
    [execution], steps, outcomes = fold_all(history())
    assert execution == {
        "workspace_id": WS,
        "execution_id": EXEC,
        "version": 10,
        "workflow_id": "wf_1",
        "workflow_name": "Mail",
        "workflow_version": 3,
        "status": "success",
        "triggered_by": "webhook",
        "original_execution_id": None,
        "created_at": T0,
        "started_at": T0 + timedelta(milliseconds=5),
        "finished_at": T0 + timedelta(milliseconds=85),
        "duration_ms": 80,
        "error_code": None,
        "error_message": None,
        "error_step_id": None,
        "deleted": 0,
    }
    fetch, send = steps
    assert fetch == {
        "workspace_id": WS,
        "execution_id": EXEC,
        "step_id": "s1",
        "version": 6,
        "workflow_id": "wf_1",
        "execution_created_at": T0,
        "step_name": "Fetch",
        "step_type": "http",
        "position": 0,
        "status": "success",
        "attempts": 2,
        "failed_attempts": 1,
        "reused_from": None,
        "started_at": T0 + timedelta(milliseconds=6),
        "finished_at": T0 + timedelta(milliseconds=70),
        "duration_ms": 40,
        "error_code": "http_status",
        "error_message": "HTTP 503",
        "deleted": 0,
    }
    assert (send["step_id"], send["version"], send["position"], send["status"]) == (
        "s2",
        9,
        1,
        "success",
    )
    assert outcomes.count(Outcome.IGNORED) == 1  # the log line


def test_a_failed_execution_keeps_its_error() -> None:
    events = [
        *history()[:3],
        event(
            4,
            ExecutionFailed(
                error=ErrorInfo(code="timeout", message="too slow", step_id="s1"),
                duration_ms=300000,
            ),
            300000,
        ),
    ]
    [execution], _, _ = fold_all(events)
    assert execution["status"] == "error"
    assert (execution["error_code"], execution["error_message"], execution["error_step_id"]) == (
        "timeout",
        "too slow",
        "s1",
    )
    assert execution["duration_ms"] == 300000


def test_a_cancelled_execution_and_its_interrupted_step() -> None:
    events = [*history()[:3], event(4, ExecutionCancelled(step_id="s1", duration_ms=9), 9)]
    [execution], [step], _ = fold_all(events)
    assert (execution["status"], execution["duration_ms"], execution["version"]) == (
        "cancelled",
        9,
        4,
    )
    assert (step["status"], step["version"]) == ("cancelled", 4)


def test_a_deleted_execution_marks_its_rows_deleted_at_a_higher_version() -> None:
    known: dict[str, ExecutionState] = {}
    fold_all(history(), known)
    [execution], steps, [outcome] = fold_all([event(11, ExecutionDeleted(), 3_600_000)], known)
    assert outcome is Outcome.APPLIED
    assert (execution["deleted"], execution["version"], execution["status"]) == (1, 11, "success")
    assert execution["finished_at"] == T0 + timedelta(milliseconds=85)  # the full state stays
    assert [(s["step_id"], s["deleted"], s["version"]) for s in steps] == [
        ("s1", 1, 11),
        ("s2", 1, 11),
    ]
    # events after the deletion (or redelivered ones) change nothing
    _, _, outcomes = fold_all(history(), known)
    assert set(outcomes) == {Outcome.DUPLICATE, Outcome.IGNORED}


def test_redelivered_events_change_nothing() -> None:
    known: dict[str, ExecutionState] = {}
    first = fold_all(history(), known)
    again_executions, again_steps, outcomes = fold_all(history(), known)
    assert (again_executions, again_steps) == ([], [])
    assert Outcome.APPLIED not in outcomes
    assert first[0][0]["version"] == 10


def test_folding_on_from_stored_rows_gives_the_rows_of_folding_from_scratch() -> None:
    events = history()
    scratch_executions, scratch_steps, _ = fold_all(events)
    for cut in range(1, len(events)):
        known: dict[str, ExecutionState] = {}
        executions, steps, _ = fold_all(events[:cut], known)
        # what a restarted loader reads back: the stored rows, not the objects
        stored = execution_from_row(executions[-1]) if executions else None
        assert stored is not None
        for row in steps:
            stored.steps[row["step_id"]] = step_from_row(row)
        # replay from an older position: everything again, some of it already stored
        replay_executions, replay_steps, _ = fold_all(events, {EXEC: stored})
        newest = {r["execution_id"]: r for r in replay_executions}
        assert newest[EXEC] == scratch_executions[0], cut
        by_step = {r["step_id"]: r for r in steps} | {r["step_id"]: r for r in replay_steps}
        assert sorted(by_step.values(), key=lambda r: r["step_id"]) == scratch_steps, cut


def test_step_events_are_versioned_per_step() -> None:
    """A crash between the steps insert and the executions insert leaves step rows newer than
    their execution row; replaying must not apply those step events twice."""
    events = history()
    known: dict[str, ExecutionState] = {}
    fold_all(events[:4], known)  # execution row at version 2, step s1 at version 4
    assert (known[EXEC].version, known[EXEC].steps["s1"].version) == (2, 4)
    executions, steps, outcomes = fold_all(events[2:], known)  # replay from seq 3
    assert outcomes[:2] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert [r["failed_attempts"] for r in steps if r["step_id"] == "s1"] == [1]
    assert executions[0]["version"] == 10


def test_events_of_an_execution_never_requested_are_refused() -> None:
    with pytest.raises(LoadError, match="no ExecutionRequested"):
        Fold({}).apply(event(2, ExecutionStarted()))


def test_a_deletion_of_an_unknown_execution_is_ignored() -> None:
    assert Fold({}).apply(event(5, ExecutionDeleted())) is Outcome.IGNORED


def test_a_command_on_the_events_topic_is_refused() -> None:
    with pytest.raises(LoadError, match="command"):
        Fold({}).apply(event(0, DeleteExecution(requested_at=T0, last_seq=3)))


def test_out_of_range_numbers_are_refused_before_anything_changes() -> None:
    known: dict[str, ExecutionState] = {}
    fold_all(history()[:2], known)
    fold = Fold(known)
    with pytest.raises(LoadError, match="duration_ms -5"):
        fold.apply(event(3, ExecutionSucceeded(duration_ms=-5)))
    assert known[EXEC].status == "running" and known[EXEC].version == 2
    assert fold.rows() == ([], [])


def test_a_step_completed_without_step_started_still_gets_a_row() -> None:
    events = [
        *history()[:2],
        event(3, StepCompleted(step_id="s9", duration_ms=0, reused_from="exec_old")),
    ]
    _, [step], _ = fold_all(events)
    assert (step["step_id"], step["status"], step["reused_from"], step["step_name"]) == (
        "s9",
        "success",
        "exec_old",
        "",
    )


def test_rows_of_a_batch_are_the_latest_state_once_per_row() -> None:
    executions, steps, _ = fold_all(history())
    assert len(executions) == 1 and len(steps) == 2
    other = [
        event(
            1,
            ExecutionRequested(workflow_id="wf_2", workflow_name="x", workflow_version=1),
            execution_id="exec_other",
        )
    ]
    executions, _, _ = fold_all(history() + other)
    assert [r["execution_id"] for r in executions] == [EXEC, "exec_other"]
