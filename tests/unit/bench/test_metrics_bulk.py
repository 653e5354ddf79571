"""The metrics bulk's plan and streams: the intended shape (workspaces, statuses, times),
counted as the loaded tables will be checked, made deterministically per range."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.metrics_bulk import MetricsBulk, Tally, make_plan, streams
from jobsprint.events import decode
from jobsprint.events.ids import looks_like_id
from jobsprint.metrics.loader import ExecutionState, Fold, Outcome

pytestmark = pytest.mark.unit

NOW = 1_795_780_800_000  # 2026-11-27T12:00:00Z
BULK = MetricsBulk(folder=Path("/nonexistent"), now_ms=NOW, executions=4000)


def test_the_plan_has_real_ids_and_the_filters_ids() -> None:
    plan = make_plan(BULK)
    assert len(plan.workspaces) == 20 and len(set(plan.workspaces)) == 20
    assert all(looks_like_id("ws", w) for w in plan.workspaces)
    for workflows in plan.workflows.values():
        assert len(workflows) == 50
        assert all(looks_like_id("wf", w.id) for w in workflows)
        assert sorted({w.steps for w in workflows}) == [1, 2]
    ids = plan.ids()
    assert ids["big_workspace"] == plan.workspaces[0]
    assert ids["big_workspace_workflow"] in {w.id for w in plan.workflows[plan.workspaces[0]]}
    assert ids["small_workspace"] != ids["big_workspace"]
    assert make_plan(BULK) == plan  # the same every run: the state file's ids stay right


def test_creation_times_are_even_over_the_span_and_the_tail_is_the_last_two_hours() -> None:
    times = [BULK.created_ms(i) for i in range(BULK.executions)]
    assert times == sorted(times)
    assert times[0] == NOW - 90 * 86_400_000 and times[-1] < NOW
    tail = BULK.tail_start()
    assert times[tail] >= NOW - 2 * 3_600_000 > times[tail - 1]


def test_the_tally_counts_what_the_metrics_loader_will_hold() -> None:
    plan = make_plan(BULK)
    tally = Tally()
    known: dict[str, ExecutionState] = {}
    fold = Fold(known)
    workspaces = []
    for _, events in streams(BULK, plan, 0, BULK.executions, tally):
        for event in map(decode, events):
            assert fold.apply(event) is Outcome.APPLIED
        workspaces.append(decode(events[0]).workspace_id)
    finished = [r for r in fold.finished_rows() if not r[-1]]  # deleted: hidden by FINAL
    assert tally.executions == len(known) == BULK.executions
    assert tally.finished == len(finished)
    assert tally.deleted == sum(s.deleted for s in known.values())
    assert tally.events > 5 * BULK.executions  # requested, started, step events, the end
    shares = {s: n / tally.executions for s, n in tally.statuses.items()}
    assert shares["success"] == pytest.approx(0.88, abs=0.02)
    assert shares["error"] == pytest.approx(0.08, abs=0.015)
    assert shares["cancelled"] == pytest.approx(0.03, abs=0.01)
    assert shares["running"] == pytest.approx(0.01, abs=0.005)
    assert workspaces.count(plan.workspaces[0]) / len(workspaces) == pytest.approx(0.5, abs=0.03)
    durations = sorted(s.duration_ms or 0 for s in known.values() if s.status == "success")
    assert 1500 < durations[len(durations) // 2] < 2200  # log-normal, median e^7.5 ≈ 1808 ms


def test_a_range_is_made_the_same_every_time() -> None:
    plan = make_plan(BULK)
    tail = BULK.tail_start()
    first = list(streams(BULK, plan, tail, BULK.executions, Tally()))
    again = list(streams(BULK, plan, tail, BULK.executions, Tally()))
    assert first == again


def test_log_lines_are_left_out_unless_asked_for() -> None:
    plan = make_plan(BULK)
    lean = [e for _, s in streams(BULK, plan, 0, 200, Tally()) for e in s]
    assert not any(decode(e).type == "execution.log_recorded.v1" for e in lean)
    full = MetricsBulk(folder=BULK.folder, now_ms=NOW, executions=4000, logs=True)
    events = [e for _, s in streams(full, plan, 0, 200, Tally()) for e in s]
    assert any(decode(e).type == "execution.log_recorded.v1" for e in events)


def test_the_spec_leaves_out_where_the_data_goes_and_how_fast_it_loads() -> None:
    spec = BULK.spec()
    assert "folder" not in spec and "batch_rows" not in spec
    assert spec["executions"] == 4000 and spec["logs"] is False
