"""A known set of executions as real events, and what the metrics over them must be."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd

from jobsprint.events import (
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
from jobsprint.events.ids import new_id

START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
ERROR_CODES = ("timeout", "http_status", "step_failed")


@dataclass
class Execution:
    """The truth about one generated execution."""

    execution_id: str
    workspace_id: str
    workflow_id: str
    status: str  # success, error, cancelled, running
    created_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    error_code: str | None = None
    deleted: bool = False
    events: list[Envelope[Any]] = field(default_factory=list)
    steps: int = 0


@dataclass
class Dataset:
    executions: list[Execution]
    workspaces: tuple[str, str]
    workflows: tuple[str, ...]  # of the first workspace

    def events(self) -> list[Envelope[Any]]:
        return [e for x in self.executions for e in x.events]


def generate(n: int = 200, seed: int = 7, days: int = 10) -> Dataset:
    rng = random.Random(seed)
    ws_a, ws_b = "ws_" + "a" * 26, "ws_" + "b" * 26
    workflows = tuple(new_id("wf", START) for _ in range(3))
    other_workflow = new_id("wf", START)
    executions = []
    for i in range(n):
        if i % 7 == 6:
            workspace = ws_b
            # the other workspace also uses one of the first's workflow ids: the workspace
            # filter must hold even when filtering by workflow
            workflow = rng.choice((workflows[0], other_workflow))
        else:
            workspace, workflow = ws_a, rng.choice(workflows)
        created = START + timedelta(milliseconds=rng.randrange(days * 86_400_000))
        roll = rng.random()
        status = (
            "success"
            if roll < 0.7
            else "error"
            if roll < 0.88
            else "cancelled"
            if roll < 0.95
            else "running"
        )
        # durations with many ties and a wide spread, so percentiles interpolate often
        duration = rng.choice((rng.randrange(50, 2_000), rng.randrange(50, 60_000), 1000, 1500))
        execution = Execution(
            execution_id=new_id("exec", created),
            workspace_id=workspace,
            workflow_id=workflow,
            status=status,
            created_at=created,
            finished_at=None,
            duration_ms=None,
        )
        build_events(execution, rng, duration)
        executions.append(execution)
    # one successful execution of the first workflow is deleted afterwards
    victim = next(x for x in executions if x.status == "success" and x.workspace_id == ws_a)
    victim.deleted = True
    last = victim.events[-1]
    victim.events.append(
        envelope(victim, len(victim.events) + 1, last.time + timedelta(hours=1), ExecutionDeleted())
    )
    return Dataset(executions, (ws_a, ws_b), workflows)


def envelope(execution: Execution, seq: int, time: datetime, payload: Any) -> Envelope[Any]:
    return make(
        payload,
        execution_id=execution.execution_id,
        workspace_id=execution.workspace_id,
        correlation_id=execution.execution_id,
        seq=seq,
        time=time,
    )


def build_events(execution: Execution, rng: random.Random, duration: int) -> None:
    events = execution.events
    t = execution.created_at

    def add(payload: Any, at: datetime) -> None:
        events.append(envelope(execution, len(events) + 1, at, payload))

    add(
        ExecutionRequested(
            workflow_id=execution.workflow_id,
            workflow_name="Workflow " + execution.workflow_id[-4:],
            workflow_version=1,
            triggered_by=rng.choice(("api", "webhook")),
        ),
        t,
    )
    add(ExecutionStarted(), t)
    steps = rng.randint(1, 3)
    execution.steps = steps
    for position in range(steps):
        step_id = f"node_{position + 1}"
        add(
            StepStarted(
                step_id=step_id,
                step_name=f"Step {position + 1}",
                step_type="transform",
                position=position,
            ),
            t,
        )
        if rng.random() < 0.2:
            error = ErrorInfo(code="http_status", message="HTTP 503", step_id=step_id)
            add(StepFailed(step_id=step_id, error=error, will_retry=True, duration_ms=5), t)
            add(
                StepStarted(
                    step_id=step_id,
                    step_name=f"Step {position + 1}",
                    step_type="transform",
                    position=position,
                    attempt=2,
                ),
                t,
            )
            add(StepCompleted(step_id=step_id, attempt=2, duration_ms=7), t)
        else:
            add(StepCompleted(step_id=step_id, duration_ms=rng.randrange(1, 50)), t)
        add(LogRecorded(message=f"step {step_id} done"), t)
    end = t + timedelta(milliseconds=duration)
    if execution.status == "success":
        add(ExecutionSucceeded(duration_ms=duration), end)
    elif execution.status == "error":
        code = rng.choice(ERROR_CODES)
        execution.error_code = code
        add(
            ExecutionFailed(
                error=ErrorInfo(code=code, message=f"failed: {code}"), duration_ms=duration
            ),
            end,
        )
    elif execution.status == "cancelled":
        add(ExecutionCancelled(duration_ms=duration), end)
    if execution.status in ("success", "error"):
        execution.finished_at = end
        execution.duration_ms = duration


# --- what the API must answer, computed independently (numpy, pandas periods, Decimal) --------

PANDAS_FREQ = {"hour": "h", "day": "D", "week": "W-SUN"}  # W-SUN: weeks ending Sunday


def half_up(value: float, places: str = "1") -> Decimal:
    return Decimal(value).quantize(Decimal(places), rounding=ROUND_HALF_UP)


def expected_metrics(
    dataset: Dataset,
    workspace: str,
    workflow: str | None,
    start: datetime,
    end: datetime,
    granularity: str,
) -> dict[str, Any]:
    chosen = [
        x
        for x in dataset.executions
        if x.workspace_id == workspace
        and (workflow is None or x.workflow_id == workflow)
        and x.status in ("success", "error")
        and not x.deleted
        and x.finished_at is not None
        and start <= x.finished_at < end
    ]
    durations = np.array([x.duration_ms for x in chosen], dtype=np.int64)
    total = len(chosen)
    successful = sum(1 for x in chosen if x.status == "success")

    def rate(ok: int, count: int) -> float:
        if count == 0:
            return 0.0
        return float((Decimal(ok) / Decimal(count)).quantize(Decimal("0.0001"), ROUND_HALF_UP))

    def average(values: np.ndarray) -> int:
        return int(half_up(float(np.mean(values)))) if len(values) else 0

    freq = PANDAS_FREQ[granularity]
    naive_start = pd.Timestamp(start.astimezone(UTC).replace(tzinfo=None))
    naive_end = pd.Timestamp(end.astimezone(UTC).replace(tzinfo=None))
    by_period: dict[Any, list[Execution]] = {}
    for x in chosen:
        assert x.finished_at is not None
        period = pd.Timestamp(x.finished_at.replace(tzinfo=None)).to_period(freq)
        by_period.setdefault(period, []).append(x)
    series = []
    period = naive_start.to_period(freq)
    while start < end and period.start_time < naive_end:
        members = by_period.get(period, [])
        series.append(
            {
                "timestamp": period.start_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "count": len(members),
                "successRate": rate(sum(1 for x in members if x.status == "success"), len(members)),
                "averageDuration": average(np.array([x.duration_ms for x in members])),
            }
        )
        period += 1
    return {
        "totalExecutions": total,
        "successfulExecutions": successful,
        "failedExecutions": total - successful,
        "successRate": rate(successful, total),
        "averageDuration": average(durations),
        "p50Duration": int(half_up(float(np.percentile(durations, 50)))) if total else 0,
        "p95Duration": int(half_up(float(np.percentile(durations, 95)))) if total else 0,
        "p99Duration": int(half_up(float(np.percentile(durations, 99)))) if total else 0,
        "timeSeries": series,
    }
