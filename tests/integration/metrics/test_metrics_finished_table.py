"""`finished_executions`, the table the metrics query reads: it follows executions that stop
counting after they finished, and a database from before it existed gets it filled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobsprint.events import (
    ErrorInfo,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionSucceeded,
    Topics,
)
from jobsprint.metrics.clickhouse import AsyncClickHouse
from jobsprint.metrics.loader import Fold
from jobsprint.metrics.schema import create_schema
from jobsprint.metrics.store import LoaderStore

from .conftest import api, load, produce
from .dataset import Dataset, Execution, envelope, generate
from .test_metrics_loading import assert_metrics_match

pytestmark = pytest.mark.integration


def finish_again(execution: Execution, payload: Any, after: timedelta) -> None:
    """Append a second terminal event and make the truth what the loader must now count."""
    last = execution.events[-1]
    at = last.time + after
    execution.events.append(envelope(execution, len(execution.events) + 1, at, payload))
    match payload:
        case ExecutionFailed():
            execution.status, execution.finished_at = "error", at
            execution.duration_ms = payload.duration_ms
        case ExecutionSucceeded():
            execution.status, execution.finished_at = "success", at
            execution.duration_ms = payload.duration_ms
        case ExecutionCancelled():
            execution.status, execution.finished_at, execution.duration_ms = "cancelled", at, None
        case ExecutionStarted():
            execution.status, execution.finished_at, execution.duration_ms = "running", None, None


def rewritten(dataset: Dataset) -> list[Execution]:
    """Four finished executions of the first workspace get a second terminal event, days
    later (another bucket): failed, succeeded, cancelled, started again."""
    ws_a = dataset.workspaces[0]
    finished = [
        x
        for x in dataset.executions
        if x.workspace_id == ws_a and x.status in ("success", "error") and not x.deleted
    ]
    chosen = finished[:4]
    error = ErrorInfo(code="timeout", message="late failure")
    finish_again(chosen[0], ExecutionFailed(error=error, duration_ms=77_777), timedelta(days=2))
    finish_again(chosen[1], ExecutionSucceeded(duration_ms=12_345), timedelta(days=3))
    finish_again(chosen[2], ExecutionCancelled(duration_ms=5), timedelta(hours=30))
    finish_again(chosen[3], ExecutionStarted(), timedelta(days=1))
    return chosen


async def counted(ch: AsyncClickHouse, database: str, ids: list[str]) -> dict[str, Any]:
    rows = await ch.query(
        f"SELECT execution_id, status, finished_at FROM {database}.finished_executions FINAL"
        " WHERE execution_id IN {ids:Array(String)}",
        {"ids": ids},
    )
    return {execution_id: (status, finished_at) for execution_id, status, finished_at in rows}


@pytest.mark.parametrize("split", [False, True], ids=["one load", "second event after restart"])
async def test_an_execution_that_stops_counting_leaves_the_metrics(
    split: bool,
    bootstrap: str,
    topics: Topics,
    metrics_db: AsyncClickHouse,
    chdb_database: str,
) -> None:
    dataset = generate(n=120, seed=41)
    firsts = {x.execution_id: len(x.events) for x in dataset.executions}
    chosen = rewritten(dataset)
    if split:
        # the first finish is stored; a fresh loader folds the second from the stored state
        await produce(
            bootstrap,
            topics,
            [e for x in dataset.executions for e in x.events[: firsts[x.execution_id]]],
        )
        await load(bootstrap, topics, metrics_db, chdb_database)
        await produce(
            bootstrap,
            topics,
            [e for x in dataset.executions for e in x.events[firsts[x.execution_id] :]],
        )
    else:
        await produce(bootstrap, topics, dataset.events())
    await load(bootstrap, topics, metrics_db, chdb_database)

    ids = [x.execution_id for x in chosen]
    assert await counted(metrics_db, chdb_database, ids) == {
        x.execution_id: (x.status, x.finished_at)
        for x in chosen
        if x.status in ("success", "error")
    }
    async with api(metrics_db, chdb_database) as client:
        assert await assert_metrics_match(client, dataset) > 100


async def test_a_database_from_before_finished_executions_gets_it_filled(
    metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    """The service's start (create_schema) fills the table from `executions`, deleted and
    unfinished executions left out, and leaves no helper table behind."""
    dataset = generate(n=150, seed=43)
    fold = Fold({})
    for event in dataset.events():
        fold.apply(event)
    finished = fold.finished_rows()
    executions, steps = fold.rows()
    await LoaderStore(metrics_db, chdb_database).write(executions, steps, finished)
    # what a folder written by the previous version holds: no finished_executions
    await metrics_db.command(f"DROP TABLE {chdb_database}.finished_executions")

    create_schema(metrics_db.sync, chdb_database)
    create_schema(metrics_db.sync, chdb_database)  # and again: nothing more happens

    tables = await metrics_db.query(
        "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": chdb_database},
    )
    assert [name for (name,) in tables] == [
        "checkpoints",
        "executions",
        "finished_executions",
        "steps",
    ]
    [[rows]] = await metrics_db.query(
        f"SELECT count() FROM {chdb_database}.finished_executions FINAL"
    )
    assert rows == sum(
        1 for x in dataset.executions if x.status in ("success", "error") and not x.deleted
    )
    async with api(metrics_db, chdb_database) as client:
        assert await assert_metrics_match(client, dataset) > 100
