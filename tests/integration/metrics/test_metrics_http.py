"""The HTTP surface: validation errors, the analysts' read-only SQL, probes, Prometheus; and
the same SQL through the clickhouse-connect adapter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import numpy as np
import pytest

from jobsprint.events import ExecutionSucceeded, make
from jobsprint.metrics.clickhouse import (
    AsyncClickHouse,
    ChdbClickHouse,
    ClickHouseError,
    ServerClickHouse,
)
from jobsprint.metrics.loader import Fold
from jobsprint.metrics.queries import execution_metrics, parse_metrics_query
from jobsprint.metrics.schema import create_schema
from jobsprint.metrics.service import analyst_settings
from jobsprint.metrics.settings import MetricsSettings
from jobsprint.metrics.store import LoaderStore

from .conftest import api
from .dataset import START, expected_metrics, generate

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"fromDate": "tomorrow"}, "fromDate", "ISO 8601"),
        ({"toDate": "2025-02-30"}, "toDate", "ISO 8601"),
        ({"fromDate": "2025-02-01", "toDate": "2025-01-01"}, "fromDate", "after toDate"),
        ({"granularity": "minute"}, "granularity", "hour, day, week"),
        ({"workspaceId": ""}, "workspaceId", "required"),
    ],
)
async def test_bad_parameters_answer_400_naming_the_field(
    metrics_db: AsyncClickHouse, chdb_database: str, params: dict[str, str], field: str, words: str
) -> None:
    async with api(metrics_db, chdb_database) as client:
        response = await client.get("/v1/metrics", params={"workspaceId": "ws_1", **params})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "validation_error"
    assert words in body["error"]["message"]
    assert body["error"]["details"][0]["field"] == field
    assert words in body["error"]["details"][0]["message"]


async def test_a_range_without_executions_is_zeros_not_an_error(
    metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    async with api(metrics_db, chdb_database) as client:
        response = await client.get(
            "/v1/metrics",
            params={"workspaceId": "ws_1", "fromDate": "2025-01-01", "toDate": "2025-01-03"},
        )
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "data": {
            "totalExecutions": 0,
            "successfulExecutions": 0,
            "failedExecutions": 0,
            "successRate": 0.0,
            "averageDuration": 0,
            "p50Duration": 0,
            "p95Duration": 0,
            "p99Duration": 0,
            "timeSeries": [
                {
                    "timestamp": "2025-01-01T00:00:00Z",
                    "count": 0,
                    "successRate": 0.0,
                    "averageDuration": 0,
                },
                {
                    "timestamp": "2025-01-02T00:00:00Z",
                    "count": 0,
                    "successRate": 0.0,
                    "averageDuration": 0,
                },
            ],
        },
    }


async def test_unknown_paths_use_the_error_shape(
    metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    async with api(metrics_db, chdb_database) as client:
        response = await client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def analyst(chdb_path: Path, database: str) -> AsyncClickHouse:
    settings = MetricsSettings(chdb_path=chdb_path, clickhouse_database=database)
    return AsyncClickHouse(
        ChdbClickHouse(chdb_path, database=database, settings=analyst_settings(settings))
    )


async def test_analyst_sql_reads_and_refuses_writes(
    chdb_path: Path, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    readonly = analyst(chdb_path, chdb_database)
    async with api(metrics_db, chdb_database, analyst=readonly) as client:
        ok = await client.post(
            "/v1/sql",
            json={
                "sql": "SELECT name FROM system.tables WHERE database = "
                f"'{chdb_database}' ORDER BY name;"
            },
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["data"] == {
            "columns": ["name"],
            "rows": [["checkpoints"], ["executions"], ["finished_executions"], ["steps"]],
            "truncated": False,
        }
        # unqualified names resolve in the service's database
        counted = await client.post("/v1/sql", json={"sql": "SELECT count() FROM executions"})
        assert counted.json()["data"]["rows"] == [[0]]
        for statement in (
            "DROP TABLE executions",
            "INSERT INTO checkpoints VALUES ('t', 0, 1, now())",
            "SELECT 1; DROP TABLE executions",
            "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        ):
            refused = await client.post("/v1/sql", json={"sql": statement})
            assert refused.status_code == 400, statement
            assert refused.json()["error"]["code"] == "validation_error"
        broken = await client.post("/v1/sql", json={"sql": "SELECT nope FROM executions"})
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "query_failed"
        bad_body = await client.post("/v1/sql", json={"query": "SELECT 1"})
        assert bad_body.status_code == 400
    # the session itself is read-only, whatever gets past the gate
    for statement in (
        f"INSERT INTO {chdb_database}.checkpoints VALUES ('t', 0, 1, now())",
        f"CREATE TABLE {chdb_database}.x (a Int8) ENGINE = Memory",
        "SET readonly = 0",
    ):
        with pytest.raises(ClickHouseError, match="readonly"):
            await readonly.query(statement)
    [[rows]] = await metrics_db.query(f"SELECT count() FROM {chdb_database}.checkpoints")
    assert rows == 0
    readonly.close()


async def test_analyst_sql_is_for_loopback_or_token_holders(
    chdb_path: Path, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    readonly = analyst(chdb_path, chdb_database)
    async with api(
        metrics_db, chdb_database, analyst=readonly, client_host="10.1.2.3", sql_token="s3cret"
    ) as client:
        refused = await client.post("/v1/sql", json={"sql": "SELECT 1"})
        assert refused.status_code == 403
        wrong = await client.post(
            "/v1/sql", json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403
        allowed = await client.post(
            "/v1/sql", json={"sql": "SELECT 1 AS one"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert allowed.status_code == 200 and allowed.json()["data"]["rows"] == [[1]]
    readonly.close()


async def test_probes_and_prometheus(metrics_db: AsyncClickHouse, chdb_database: str) -> None:
    async with api(metrics_db, chdb_database) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        text = (await client.get("/metrics")).text
    assert "jobsprint_metrics_rows_loaded_total" in text
    assert "jobsprint_metrics_batch_seconds" in text
    assert "jobsprint_dead_letters_total" in text


async def test_the_clickhouse_connect_adapter_runs_the_same_sql(
    chdb_path: Path, chdb_database: str
) -> None:
    """clickhouse-connect, here on its in-process chDB transport (no server on this machine),
    writes and answers exactly like the chDB adapter."""
    client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_path))
    server = ServerClickHouse.of_client(client)
    create_schema(server, chdb_database)
    dataset = generate(n=80, seed=31)
    fold = Fold({})
    for envelope in dataset.events():
        fold.apply(envelope)
    finished = fold.finished_rows()
    executions, steps = fold.rows()
    connected = AsyncClickHouse(server)
    store = LoaderStore(connected, chdb_database)
    await store.write(executions, steps, finished)
    await store.save_checkpoints("topic", {0: 17})
    assert await store.checkpoints("topic") == {0: 17}
    stored = await store.load({x.execution_id: x.workspace_id for x in dataset.executions[:5]})
    assert {s.execution_id for s in stored.values()} == {
        x.execution_id for x in dataset.executions[:5]
    }
    first = dataset.executions[0]
    assert stored[first.execution_id].created_at == first.created_at
    assert len(stored[first.execution_id].steps) == first.steps

    chdb = AsyncClickHouse(ChdbClickHouse(chdb_path))
    for granularity in ("hour", "day", "week"):
        query = parse_metrics_query(
            workspace_id=dataset.workspaces[0],
            workflow_id=None,
            from_date="2025-01-06",
            to_date="2025-01-20",
            granularity=granularity,
            now=datetime.now(UTC),
        )
        via_connect = await execution_metrics(connected, chdb_database, query)
        assert via_connect == await execution_metrics(chdb, chdb_database, query)
        assert via_connect == expected_metrics(
            dataset, dataset.workspaces[0], None, START, START + timedelta(days=14), granularity
        )
    chdb.close()
    client.close()


class CountingClickHouse(AsyncClickHouse):
    def __init__(self, inner: AsyncClickHouse) -> None:
        super().__init__(inner.sync)
        self.queries: list[str] = []

    async def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.queries.append(sql)
        return await super().query(sql, params)


async def test_a_percentile_on_a_rounding_edge_is_read_exactly(
    metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    """p95 of these 22 durations interpolates 1000 -> 1010 with weight 0.95: 1009.5 give or
    take float noise, where ClickHouse's and numpy's rounding could part. The exact order
    statistics are read then, and the answer is numpy's."""
    durations = [100] * 19 + [1000, 1010, 5000]
    dataset = generate(n=len(durations), seed=1)
    fold = Fold({})
    for execution, duration in zip(dataset.executions, durations, strict=True):
        execution.workspace_id, execution.status, execution.deleted = "ws_edge", "success", False
        for envelope in execution.events[:2]:  # requested, started
            fold.apply(envelope.model_copy(update={"workspace_id": "ws_edge"}))
        finished = execution.created_at + timedelta(milliseconds=duration)
        execution.finished_at, execution.duration_ms = finished, duration
        fold.apply(
            make(
                ExecutionSucceeded(duration_ms=duration),
                execution_id=execution.execution_id,
                workspace_id="ws_edge",
                correlation_id="c",
                seq=3,
                time=finished,
            )
        )
    finished = fold.finished_rows()
    executions, steps = fold.rows()
    await LoaderStore(metrics_db, chdb_database).write(executions, steps, finished)

    counting = CountingClickHouse(metrics_db)
    query = parse_metrics_query(
        workspace_id="ws_edge",
        workflow_id=None,
        from_date="2025-01-01",
        to_date="2025-02-01",
        granularity="week",
        now=datetime.now(UTC),
    )
    data = await execution_metrics(counting, chdb_database, query)
    assert len(counting.queries) == 2 and "quantilesExact(" in counting.queries[1]
    want = expected_metrics(dataset, "ws_edge", None, query.start, query.end, "week")
    assert data == want
    assert data["p95Duration"] == int(
        Decimal(float(np.percentile(durations, 95))).quantize(Decimal(1), ROUND_HALF_UP)
    )
