"""Helpers for the metrics integration tests: produce real events, load them with the real
loader into the session's chDB (one database per test), and talk to the API over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobsprint.events import Envelope, Topics, encode
from jobsprint.metrics.api import ApiContext, create_app
from jobsprint.metrics.clickhouse import AsyncClickHouse, ChdbClickHouse
from jobsprint.metrics.consumer import EventsLoader
from jobsprint.metrics.schema import create_schema
from jobsprint.metrics.store import LoaderStore
from jobsprint.runtime.kafka import make_consumer, make_producer


@pytest.fixture
def metrics_db(chdb_path: Path, chdb_database: str) -> Iterator[AsyncClickHouse]:
    """A ClickHouse session on the test's database, with the metrics tables."""
    ch = ChdbClickHouse(chdb_path)
    create_schema(ch, chdb_database)
    yield AsyncClickHouse(ch)
    ch.close()


async def produce(
    bootstrap: str, topics: Topics, events: Iterable[Envelope[Any]], raw: Iterable[bytes] = ()
) -> None:
    producer = make_producer(bootstrap, client_id="test-metrics", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topics.events, encode(e), key=e.key) for e in events]
        sent += [await producer.send(topics.events, value, key=b"exec_raw") for value in raw]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def load(
    bootstrap: str,
    topics: Topics,
    ch: AsyncClickHouse,
    database: str,
    *,
    batch_max_rows: int = 5000,
    timeout_s: float = 60,
) -> None:
    """Run a fresh loader (empty cache, positions from the checkpoints) until it has read
    every partition to its end, then stop it."""
    consumer = make_consumer(bootstrap, group_id=None, client_id="test-metrics")
    producer = make_producer(bootstrap, client_id="test-metrics-dlq")
    await consumer.start()
    await producer.start()
    loader = EventsLoader(
        consumer=consumer,
        producer=producer,
        store=LoaderStore(ch, database),
        topics=topics,
        bootstrap=bootstrap,
        batch_max_rows=batch_max_rows,
        batch_max_seconds=0.5,
        commit_to_kafka=False,
    )
    task = asyncio.create_task(loader.run())
    try:
        async with asyncio.timeout(timeout_s):
            waiter = asyncio.create_task(loader.caught_up.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        loader.stop()
        await task
    finally:
        if not task.done():
            task.cancel()
        await consumer.stop()
        await producer.stop()


@asynccontextmanager
async def api(
    ch: AsyncClickHouse,
    database: str,
    *,
    now: Callable[[], datetime] | None = None,
    analyst: AsyncClickHouse | None = None,
    client_host: str = "127.0.0.1",
    sql_token: str | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    async def ready() -> str | None:
        return None

    context = ApiContext(
        metrics=ch, database=database, ready=ready, analyst=analyst, sql_token=sql_token
    )
    if now is not None:
        context.now = now
    transport = httpx.ASGITransport(app=create_app(context), client=(client_host, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
        yield client
