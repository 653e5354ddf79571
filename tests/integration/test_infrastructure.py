"""The foundation talks to real components: a Kafka round trip through the codec, a
migration on real Postgres, a chDB table written and read back."""

from __future__ import annotations

import asyncio
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from jobsprint.events import (
    DeadLetter,
    ExecutionStarted,
    StepCompleted,
    Topics,
    UndecodableMessage,
    decode,
    encode,
    make,
)
from jobsprint.runtime.kafka import make_consumer, make_producer, send_to_dead_letter
from jobsprint.runtime.postgres import migrate

pytestmark = pytest.mark.integration


async def test_events_round_trip_through_the_real_broker(bootstrap: str, topics: Topics) -> None:
    producer = make_producer(bootstrap, client_id="test")
    await producer.start()
    sent = [
        make(
            ExecutionStarted(), execution_id="exec_a", workspace_id="ws", seq=1, correlation_id="c"
        ),
        make(
            StepCompleted(step_id="s1", output={"n": 1}),
            execution_id="exec_a",
            workspace_id="ws",
            seq=2,
            correlation_id="c",
        ),
    ]
    for envelope in sent:
        await producer.send_and_wait(topics.events, encode(envelope), key=envelope.key)
    await producer.stop()

    consumer = make_consumer(bootstrap, topics.events, group_id="g-roundtrip", client_id="test")
    await consumer.start()
    try:
        received = []
        async with asyncio.timeout(20):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    received += [decode(r.value) for r in records]
        partitions = {tp.partition for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    assert received == sent
    assert len(partitions) == 3  # the fixture's per-test topic, co-partitioned


async def test_undecodable_bytes_go_to_the_dead_letter_topic_with_their_origin(
    bootstrap: str, topics: Topics
) -> None:
    producer = make_producer(bootstrap, client_id="test")
    await producer.start()
    await producer.send_and_wait(topics.events, b"\xffgarbage", key=b"exec_b")
    consumer = make_consumer(bootstrap, topics.events, group_id="g-dlq", client_id="test")
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            record = None
            while record is None:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    record = records[0]
        with pytest.raises(UndecodableMessage) as caught:
            decode(record.value)
        await send_to_dead_letter(producer, topics, record, "test", caught.value.reason)
    finally:
        await consumer.stop()
        await producer.stop()

    reader = make_consumer(bootstrap, topics.dead_letter, group_id="g-dlq-read", client_id="test")
    await reader.start()
    try:
        async with asyncio.timeout(20):
            letters: list[Any] = []
            while not letters:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    letters += [DeadLetter.model_validate_json(r.value) for r in records]
    finally:
        await reader.stop()
    letter = letters[0]
    assert (letter.topic, letter.partition, letter.offset) == (topics.events, record.partition, 0)
    assert letter.payload == b"\xffgarbage"
    assert "not JSON" in letter.error


async def test_migrations_apply_once_on_real_postgres(database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_create_things.sql").write_text(
        "CREATE TABLE things (id bigint PRIMARY KEY, name text NOT NULL);"
    )
    (tmp_path / "0002_add_column.sql").write_text("ALTER TABLE things ADD COLUMN size int;")
    (tmp_path / "notes.txt").write_text("not a migration")
    folder: Any = tmp_path
    assert await migrate(database, "test", folder) == [
        "0001_create_things.sql",
        "0002_add_column.sql",
    ]
    assert await migrate(database, "test", folder) == []  # idempotent
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO things VALUES (1, 'a', 3)")
        assert conn.execute("SELECT name, size FROM things").fetchall() == [("a", 3)]
        versions = conn.execute(
            "SELECT version FROM jobsprint_migrations WHERE component = 'test' ORDER BY 1"
        ).fetchall()
    assert versions == [(1,), (2,)]


def test_chdb_table_written_and_read_back(chdb_connection: Any, chdb_database: str) -> None:
    db = chdb_database
    chdb_connection.query(
        f"CREATE TABLE {db}.durations (id UInt32, ms Float64) ENGINE = MergeTree ORDER BY id"
    )
    values = [float(v) for v in np.random.default_rng(7).integers(1, 10_000, size=501)]
    rows = ",".join(f"({i}, {v})" for i, v in enumerate(values))
    chdb_connection.query(f"INSERT INTO {db}.durations VALUES {rows}")
    cursor = chdb_connection.cursor()
    cursor.execute(f"SELECT count(), quantileExactInclusive(0.95)(ms) FROM {db}.durations")
    count, p95 = cursor.fetchone()
    assert count == 501
    assert p95 == pytest.approx(np.percentile(values, 95))


def test_events_package_ships_its_golden_samples() -> None:
    assert any(p.name.endswith(".json") for p in (files("jobsprint.events") / "samples").iterdir())
