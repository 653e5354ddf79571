"""Infrastructure failures are not poison: the projector stops with an error, commits and
dead-letters nothing, and a restart carries on from its last checkpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from jobsprint.events import Topics
from jobsprint.projector.compare import compare_schemas
from jobsprint.projector.consumer import CheckpointAheadOfLog
from jobsprint.projector.rebuild import rebuild
from jobsprint.projector.service import serve
from jobsprint.projector.settings import ProjectorSettings

pytestmark = pytest.mark.integration


async def test_losing_postgres_stops_the_projector_without_dead_letters(
    settings: ProjectorSettings,
    bootstrap: str,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    run_projector: Any,
    caught_up: Any,
    stored_checkpoints: Any,
) -> None:
    await publisher.send(make_workload(100))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    await caught_up(database, topics.events, publisher.last_offsets, task=task)
    before = await stored_checkpoints(database, topics.events)

    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    await publisher.send(make_workload(100))
    with pytest.raises(psycopg.OperationalError):
        await asyncio.wait_for(task, 20)
    assert await stored_checkpoints(database, topics.events) == before
    assert await dead_letter_count(bootstrap, topics) == 0

    async with run_projector(settings) as projector:
        await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)
    await rebuild(settings, "rebuild_after_failure")
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        same, report = await compare_schemas(conn, "public", "rebuild_after_failure")
    assert same, "\n".join(report)


async def dead_letter_count(bootstrap: str, topics: Topics) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topics.dead_letter, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_checkpoints_past_the_end_of_the_log_stop_the_projector_with_a_clear_error(
    settings: ProjectorSettings,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    run_projector: Any,
    caught_up: Any,
) -> None:
    """A read model kept from another Kafka cluster (a reused Postgres, a recreated topic):
    its positions lie past the new log's end. Waiting there would never end; the projector
    must say so and stop."""
    await publisher.send(make_workload(20))
    async with run_projector(settings) as projector:
        await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute(
            "UPDATE projector_checkpoints SET next_offset = next_offset + 1000"
            " WHERE topic = %s AND partition = 1",
            (topics.events,),
        )
    task = asyncio.create_task(serve(settings, asyncio.Event()))
    with pytest.raises(CheckpointAheadOfLog, match=r"past the end of the log.*\{1: \(") as failed:
        await asyncio.wait_for(task, 30)
    assert "rebuild" in str(failed.value)
