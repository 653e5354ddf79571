"""Generated bulk events are what the executor appends: the real codec decodes every one,
ids sort by time, and the real fold turns each stream into the intended execution."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from bench.eventgen import (
    StreamMaker,
    WorkflowPicker,
    creation_times,
    encode_base32,
    make_id,
    make_workflows,
)
from jobsprint.events import decode
from jobsprint.events.ids import id_time, looks_like_id
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
