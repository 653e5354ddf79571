"""Generated bulk events are what the executor appends: the real codec decodes every one,
ids sort by time, and the real folds (the projector's and the metrics loader's) turn each
stream into the intended execution."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from bench.eventgen import (
    StreamMaker,
    Workflow,
    WorkflowPicker,
    creation_times,
    encode_base32,
    make_id,
    make_workflows,
)
from jobsprint.events import decode
from jobsprint.events.ids import id_time, looks_like_id
from jobsprint.metrics.loader import ExecutionState, Fold, Outcome
from jobsprint.metrics.schema import FINISHED_COLUMNS
from jobsprint.projector.fold import Projection

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000  # ms


def stream(status: str, recent: bool = True) -> tuple[str, list[bytes]]:
    maker = StreamMaker("ws_01m8d7jahcev65z0fs95xvmkps", seed=3)
    workflow = make_workflows(3, random.Random(1), T0 - 10)[0]
    return maker.execution(workflow, T0, status, recent=recent)


@pytest.mark.parametrize(
    ("status", "events"),
    [("success", 13), ("error", 13), ("cancelled", 11), ("running", 9), ("pending", 1)],
)
def test_every_generated_event_decodes_with_the_real_codec(status: str, events: int) -> None:
    execution_id, raw = stream(status)
    decoded = [decode(r) for r in raw]
    assert len(decoded) == events
    assert [e.seq for e in decoded] == list(range(1, events + 1))
    assert {e.execution_id for e in decoded} == {execution_id}
    assert decoded[0].type == "execution.requested.v1"


@pytest.mark.parametrize("status", ["success", "error", "cancelled", "running", "pending"])
def test_the_projector_fold_makes_the_intended_execution(status: str) -> None:
    execution_id, raw = stream(status)
    projection = Projection()
    for event in (decode(r) for r in raw):
        assert projection.apply(event)
    row = projection.executions[execution_id]
    assert row.status == status
    if status in ("success", "error"):
        assert row.duration_ms is not None and row.finished_at is not None


def test_the_success_stream_has_the_shape_of_the_live_two_step_workflow() -> None:
    _, raw = stream("success")
    types = [decode(r).type.removeprefix("execution.").removesuffix(".v1") for r in raw]
    assert types == [
        "requested", "started", "log_recorded",
        "step_started", "log_recorded", "step_completed", "log_recorded",
        "step_started", "log_recorded", "step_completed", "log_recorded",
        "log_recorded", "succeeded",
    ]  # fmt: skip


def test_old_executions_are_never_left_running_or_pending() -> None:
    _, raw = stream("running", recent=False)
    assert decode(raw[-1]).type == "execution.succeeded.v1"


def test_ids_have_the_time_ordered_format_of_jobsprint_ids() -> None:
    rng = random.Random(2)
    ids = [make_id("exec", T0 + i, rng) for i in range(50)]
    assert all(looks_like_id("exec", i) for i in ids)
    assert ids == sorted(ids)
    assert id_time(ids[0]) == datetime.fromtimestamp(T0 / 1000, UTC)
    assert encode_base32(0, 3) == "000"


def test_event_times_are_utc_milliseconds_from_the_request_on() -> None:
    _, raw = stream("success")
    times = [decode(r).time for r in raw]
    assert times[0] == datetime.fromtimestamp(T0 / 1000, UTC)
    assert times == sorted(times)


def test_creation_times_are_sorted_and_within_the_span() -> None:
    times = creation_times(2000, T0, 30, random.Random(4))
    assert times == sorted(times)
    assert times[0] >= T0 - 30 * 86_400_000
    assert times[-1] < T0


def test_the_first_workflow_is_the_busiest() -> None:
    rng = random.Random(9)
    workflows = make_workflows(10, rng, T0)
    pick = WorkflowPicker(workflows, rng)
    drawn = [pick().id for _ in range(5000)]
    assert max(set(drawn), key=drawn.count) == workflows[0].id


# --- the metrics bulk's variants: one step, given durations, deletions, no log lines ---------

ONE_STEP = Workflow("wf_01m8d7jahcev65z0fs95xvmkpt", "One-step workflow", 1.0, steps=1)


def variant(status: str, **options: object) -> tuple[str, list[bytes]]:
    maker = StreamMaker("ws_01m8d7jahcev65z0fs95xvmkps", seed=3)
    workflow = options.pop("workflow", ONE_STEP)
    return maker.execution(workflow, T0, status, **options)  # type: ignore[arg-type]


def short_types(raw: list[bytes]) -> list[str]:
    return [decode(r).type.removeprefix("execution.").removesuffix(".v1") for r in raw]


def test_a_one_step_success_is_the_two_step_stream_without_the_second_step() -> None:
    _, raw = variant("success")
    assert short_types(raw) == [
        "requested", "started", "log_recorded",
        "step_started", "log_recorded", "step_completed", "log_recorded",
        "log_recorded", "succeeded",
    ]  # fmt: skip
    assert [decode(r).seq for r in raw] == list(range(1, 10))


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("status", ["success", "error", "cancelled", "running"])
def test_without_log_lines_every_other_event_keeps_its_seq(steps: int, status: str) -> None:
    workflow = ONE_STEP if steps == 1 else make_workflows(1, random.Random(1), T0 - 10)[0]
    _, full = variant(status, workflow=workflow)
    _, lean = variant(status, workflow=workflow, logs=False)
    kept = [(e.seq, e.type) for e in map(decode, full) if e.type != "execution.log_recorded.v1"]
    assert [(decode(r).seq, decode(r).type) for r in lean] == kept
    assert all(decode(r).type != "execution.log_recorded.v1" for r in lean)


@pytest.mark.parametrize("status", ["success", "error", "cancelled"])
@pytest.mark.parametrize("steps", [1, 2])
def test_a_given_duration_is_the_executions_and_its_steps_add_up_to_it(
    status: str, steps: int
) -> None:
    workflow = ONE_STEP if steps == 1 else make_workflows(1, random.Random(1), T0 - 10)[0]
    _, raw = variant(status, workflow=workflow, duration_ms=1803)
    events = [decode(r) for r in raw]
    started = next(e for e in events if e.type == "execution.started.v1")
    final = events[-1]
    assert final.data.duration_ms == 1803  # type: ignore[attr-defined]
    assert (final.time - started.time).total_seconds() * 1000 == 1803
    step_ends = ("execution.step_completed.v1", "execution.step_failed.v1")
    step_ms = [e.data.duration_ms for e in events if e.type in step_ends]  # type: ignore[attr-defined]
    if status != "cancelled":
        assert sum(step_ms) == 1803


@pytest.mark.parametrize("logs", [True, False])
@pytest.mark.parametrize("status", ["success", "error", "cancelled"])
def test_a_deletion_follows_the_last_event_as_the_executor_appends_it(
    status: str, logs: bool
) -> None:
    execution_id, raw = variant(status, deleted_after_ms=5000, logs=logs)
    _, undeleted = variant(status)
    last, deleted = decode(raw[-2]), decode(raw[-1])
    assert deleted.type == "execution.deleted.v1"
    assert deleted.seq == decode(undeleted[-1]).seq + 1  # last_seq + 1, logs counted
    assert deleted.correlation_id == execution_id  # the gateway's DeleteExecution
    assert (deleted.time - last.time).total_seconds() == 5
    projection = Projection()
    for event in (decode(r) for r in raw):
        projection.apply(event)
    assert execution_id not in projection.executions


def test_workspace_and_trigger_can_be_given_per_execution() -> None:
    _, raw = variant(
        "success", workspace_id="ws_01m8d7jahcev65z0fs95xvmkpz", triggered_by="webhook"
    )
    events = [decode(r) for r in raw]
    assert {e.workspace_id for e in events} == {"ws_01m8d7jahcev65z0fs95xvmkpz"}
    assert events[0].data.triggered_by == "webhook"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "deleted"),
    [(s, False) for s in ("success", "error", "cancelled", "running", "pending")]
    + [(s, True) for s in ("success", "error", "cancelled")],  # only finished ones are deleted
)
def test_the_metrics_loader_fold_makes_the_intended_rows(status: str, deleted: bool) -> None:
    execution_id, raw = variant(
        status, duration_ms=2500, deleted_after_ms=1000 if deleted else None, logs=False
    )
    known: dict[str, ExecutionState] = {}
    fold = Fold(known)
    for event in (decode(r) for r in raw):
        assert fold.apply(event) is Outcome.APPLIED
    state = known[execution_id]
    assert state.status == status
    assert state.deleted == int(deleted)
    finished = fold.finished_rows()
    if status in ("success", "error"):
        assert [row[FINISHED_COLUMNS.index("duration_ms")] for row in finished] == [2500]
        assert finished[0][FINISHED_COLUMNS.index("deleted")] == int(deleted)
    else:
        assert finished == []
