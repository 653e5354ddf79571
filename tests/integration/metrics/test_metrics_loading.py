"""Real events through Kafka into chDB, read back through the HTTP API, compared field by field
with numpy over the same generated executions."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobsprint.events import DeadLetter, DeleteExecution, Topics, encode, make
from jobsprint.metrics import telemetry
from jobsprint.metrics.clickhouse import AsyncClickHouse, ClickHouseError
from jobsprint.metrics.consumer import EventsLoader
from jobsprint.metrics.store import LoaderStore
from jobsprint.runtime.kafka import make_consumer, make_producer

from .conftest import api, load, produce
from .dataset import START, Dataset, expected_metrics, generate

pytestmark = pytest.mark.integration


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def cases(dataset: Dataset) -> list[dict[str, Any]]:
    ws_a, ws_b = dataset.workspaces
    wide = ("2025-01-01", "2025-02-01")
    found: list[dict[str, Any]] = []
    for granularity in ("hour", "day", "week"):
        found.append({"workspace": ws_a, "range": wide, "granularity": granularity})
        # a range cutting buckets in the middle, with an offset on the end
        found.append(
            {
                "workspace": ws_a,
                "range": ("2025-01-08T06:30:00Z", "2025-01-11T18:00:00+02:00"),
                "granularity": granularity,
            }
        )
    for workflow in dataset.workflows:
        found.append({"workspace": ws_a, "workflow": workflow, "range": wide})
        found.append(
            {
                "workspace": ws_a,
                "workflow": workflow,
                "range": ("2025-01-09", "2025-01-13"),
                "granularity": "hour",
            }
        )
    # the other workspace, filtered by a workflow id both workspaces use
    found.append({"workspace": ws_b, "workflow": dataset.workflows[0], "range": wide})
    found.append({"workspace": ws_b, "range": wide, "granularity": "week"})
    # nothing matches: zeros, empty buckets still listed
    found.append({"workspace": ws_a, "workflow": "wf_nope", "range": ("2025-01-06", "2025-01-09")})
    found.append({"workspace": "ws_nobody", "range": wide})
    # an empty range
    found.append({"workspace": ws_a, "range": ("2025-01-08T00:00:00Z", "2025-01-08")})
    return found


async def assert_metrics_match(client: Any, dataset: Dataset) -> int:
    checked = 0
    for case in cases(dataset):
        granularity = case.get("granularity")
        params = {
            "workspaceId": case["workspace"],
            "fromDate": case["range"][0],
            "toDate": case["range"][1],
        }
        if case.get("workflow"):
            params["workflowId"] = case["workflow"]
        if granularity:
            params["granularity"] = granularity
        response = await client.get("/v1/metrics", params=params)
        assert response.status_code == 200, response.text
        want = expected_metrics(
            dataset,
            case["workspace"],
            case.get("workflow"),
            at(case["range"][0]),
            at(case["range"][1]),
            granularity or "day",
        )
        assert response.json() == {"success": True, "data": want}, case
        checked += want["totalExecutions"]
    return checked


async def test_metrics_equal_numpy_for_every_filter_and_granularity(
    bootstrap: str, topics: Topics, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    dataset = generate()
    await produce(bootstrap, topics, dataset.events())
    await load(bootstrap, topics, metrics_db, chdb_database)

    async with api(
        metrics_db, chdb_database, now=lambda: START + timedelta(days=12, hours=6)
    ) as client:
        assert await assert_metrics_match(client, dataset) > 150
        # the defaults: the last 30 days up to now, by day
        response = await client.get("/v1/metrics", params={"workspaceId": dataset.workspaces[0]})
        want = expected_metrics(
            dataset,
            dataset.workspaces[0],
            None,
            START + timedelta(days=12, hours=6) - timedelta(days=30),
            START + timedelta(days=12, hours=6),
            "day",
        )
        assert response.json()["data"] == want
        assert len(want["timeSeries"]) == 31 and want["totalExecutions"] > 100
        # the public path the gateway proxies answers the same
        same = await client.get(
            "/v1/executions/metrics", params={"workspaceId": dataset.workspaces[0]}
        )
        assert same.json() == response.json()

    # cancelled, running and deleted executions are stored but never counted
    rows = await metrics_db.query(
        f"SELECT status, count() FROM {chdb_database}.executions FINAL GROUP BY status"
    )
    stored = dict(rows)
    visible = [x for x in dataset.executions if not x.deleted]
    for status in ("success", "error", "cancelled", "running"):
        assert stored.get(status, 0) == sum(1 for x in visible if x.status == status)
    [[deleted_rows]] = await metrics_db.query(
        f"SELECT countIf(deleted = 1) FROM {chdb_database}.executions"
    )
    assert deleted_rows >= 1


async def snapshot(ch: AsyncClickHouse, database: str) -> tuple[Any, Any]:
    executions = await ch.query(
        f"SELECT * FROM {database}.executions FINAL ORDER BY workspace_id, execution_id"
    )
    steps = await ch.query(
        f"SELECT * FROM {database}.steps FINAL ORDER BY workspace_id, execution_id, step_id"
    )
    return executions, steps


async def test_loading_everything_again_changes_nothing(
    bootstrap: str, topics: Topics, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    dataset = generate(seed=11)
    await produce(bootstrap, topics, dataset.events())
    await load(bootstrap, topics, metrics_db, chdb_database)
    before = await snapshot(metrics_db, chdb_database)
    applied_before = telemetry.EVENTS.labels("applied")._value.get()

    # redelivery of everything: forget the checkpoints, load again with an empty cache
    await metrics_db.command(f"TRUNCATE TABLE {chdb_database}.checkpoints")
    await load(bootstrap, topics, metrics_db, chdb_database, batch_max_rows=700)
    assert telemetry.EVENTS.labels("applied")._value.get() > applied_before  # it did re-read

    assert await snapshot(metrics_db, chdb_database) == before
    async with api(metrics_db, chdb_database) as client:
        assert await assert_metrics_match(client, dataset) > 150


async def test_a_restarted_loader_resumes_from_its_checkpoint_with_stored_state(
    bootstrap: str, topics: Topics, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    """Executions half-loaded before a restart are finished from their stored rows, not
    replayed from the beginning of the topic."""
    dataset = generate(seed=23)
    rng = random.Random(5)
    cuts = {x.execution_id: rng.randrange(1, len(x.events)) for x in dataset.executions}
    first = [e for x in dataset.executions for e in x.events[: cuts[x.execution_id]]]
    rest = [e for x in dataset.executions for e in x.events[cuts[x.execution_id] :]]
    await produce(bootstrap, topics, first)
    await load(bootstrap, topics, metrics_db, chdb_database, batch_max_rows=300)
    checkpoints = await metrics_db.query(
        f"SELECT partition, max(next_offset) FROM {chdb_database}.checkpoints GROUP BY partition"
    )
    assert sum(offset for _, offset in checkpoints) == len(first)

    await produce(bootstrap, topics, rest)
    await load(bootstrap, topics, metrics_db, chdb_database, batch_max_rows=300)
    async with api(metrics_db, chdb_database) as client:
        assert await assert_metrics_match(client, dataset) > 150


async def test_poison_messages_are_dead_lettered_and_loading_goes_on(
    bootstrap: str, topics: Topics, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    dataset = generate(n=60, seed=3)
    command = make(
        DeleteExecution(requested_at=START, last_seq=1),
        execution_id="exec_cmd",
        workspace_id="ws",
        correlation_id="c",
    )
    orphan = dataset.executions[0].events[1].model_copy(update={"execution_id": "exec_orphan"})
    await produce(
        bootstrap,
        topics,
        [*dataset.events(), orphan],
        raw=[b"\xffnot json", b'{"type": "execution.unknown.v9", "data": {}}', encode(command)],
    )
    dead_before = telemetry.DEAD_LETTERS.labels("metrics")._value.get()
    await load(bootstrap, topics, metrics_db, chdb_database)
    assert telemetry.DEAD_LETTERS.labels("metrics")._value.get() - dead_before == 4

    reader = make_consumer(bootstrap, topics.dead_letter, group_id=None, client_id="test")
    await reader.start()
    letters: list[DeadLetter] = []
    try:
        while len(letters) < 4:
            for records in (await reader.getmany(timeout_ms=1000)).values():
                letters += [DeadLetter.model_validate_json(r.value) for r in records]
    finally:
        await reader.stop()
    assert {letter.consumer for letter in letters} == {"metrics"}
    reasons = " | ".join(sorted(letter.error for letter in letters))
    assert "not JSON" in reasons and "unknown message type" in reasons
    assert "command" in reasons and "no ExecutionRequested" in reasons
    async with api(metrics_db, chdb_database) as client:
        response = await client.get(
            "/v1/metrics",
            params={
                "workspaceId": dataset.workspaces[0],
                "fromDate": "2025-01-01",
                "toDate": "2025-02-01",
            },
        )
    want = expected_metrics(
        dataset, dataset.workspaces[0], None, at("2025-01-01"), at("2025-02-01"), "day"
    )
    assert response.json()["data"] == want


def batches_so_far() -> float:
    [metric] = telemetry.BATCH_EVENTS.collect()
    return next(s.value for s in metric.samples if s.name.endswith("_count"))


async def test_a_trickle_of_events_is_inserted_about_once_a_second(
    bootstrap: str, topics: Topics, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    dataset = generate(n=3, seed=8)
    consumer = make_consumer(bootstrap, group_id=None, client_id="test-metrics")
    producer = make_producer(bootstrap, client_id="test-metrics")
    await consumer.start()
    await producer.start()
    loader = EventsLoader(
        consumer=consumer,
        producer=producer,
        store=LoaderStore(metrics_db, chdb_database),
        topics=topics,
        bootstrap=bootstrap,
        batch_max_rows=5000,
        batch_max_seconds=1.0,
        commit_to_kafka=False,
    )
    task = asyncio.create_task(loader.run())
    try:
        await asyncio.sleep(1)
        before = batches_so_far()
        started = time.monotonic()
        events = dataset.events()
        for envelope in events:  # one event every ~150 ms, longer than a poll waits
            await producer.send_and_wait(topics.events, encode(envelope), key=envelope.key)
            await asyncio.sleep(0.15)
        spent = time.monotonic() - started
        await asyncio.sleep(1.2)
        inserts = batches_so_far() - before
    finally:
        loader.stop()
        await task
        await consumer.stop()
        await producer.stop()
    assert len(events) > 15
    assert inserts <= spent + 2 < len(events) / 2, (inserts, spent)  # not one per event
    [[loaded]] = await metrics_db.query(f"SELECT count() FROM {chdb_database}.executions FINAL")
    assert loaded == len([x for x in dataset.executions if not x.deleted])


async def test_a_clickhouse_failure_stops_the_loader_without_a_checkpoint(
    bootstrap: str, topics: Topics, metrics_db: AsyncClickHouse, chdb_database: str
) -> None:
    dataset = generate(n=40, seed=4)
    events = dataset.events()
    await produce(bootstrap, topics, events[:100])
    await load(bootstrap, topics, metrics_db, chdb_database)
    checkpoint_sql = (
        f"SELECT partition, max(next_offset) FROM {chdb_database}.checkpoints"
        " GROUP BY partition ORDER BY partition"
    )
    before = await metrics_db.query(checkpoint_sql)

    await produce(bootstrap, topics, events[100:])
    await metrics_db.command(f"DROP TABLE {chdb_database}.steps")  # ClickHouse breaks
    with pytest.raises(ClickHouseError, match="steps"):
        await load(bootstrap, topics, metrics_db, chdb_database)
    assert await metrics_db.query(checkpoint_sql) == before
