"""Bootstrap of the live projector: builds the adapters from settings, serves the ops
endpoint, runs the loop until asked to stop, and closes everything."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from jobsprint.projector import store
from jobsprint.projector.consumer import Projector
from jobsprint.projector.settings import ProjectorSettings
from jobsprint.runtime.heap import settle_heap
from jobsprint.runtime.kafka import ensure_topics, make_consumer, make_producer
from jobsprint.runtime.ops import serve_ops
from jobsprint.runtime.postgres import make_pool

log = logging.getLogger(__name__)


async def serve(settings: ProjectorSettings, stop: asyncio.Event) -> None:
    """Run the projector until `stop` is set. Infrastructure errors propagate: the caller
    exits non-zero and the orchestrator restarts it, from the last committed batch."""
    topics = settings.topics
    schema = settings.projector_schema
    await store.prepare_schema(settings.database_url, schema)
    await ensure_topics(settings.kafka_bootstrap, topics, settings.partitions)

    async with AsyncExitStack() as resources:  # closed in reverse order, whatever happens
        probe_pool = make_pool(
            store.schema_conninfo(settings.database_url, schema), max_size=1, name="projector-probe"
        )
        await probe_pool.open()
        resources.push_async_callback(probe_pool.close)
        conn = await store.connect(settings.database_url, schema)
        resources.push_async_callback(conn.close)
        producer = make_producer(
            settings.kafka_bootstrap, client_id=f"{settings.projector_group}-dlq"
        )
        await producer.start()
        resources.push_async_callback(_quietly, producer.stop)
        consumer = make_consumer(
            settings.kafka_bootstrap,
            group_id=settings.projector_group,
            client_id=settings.projector_group,
            max_poll_records=settings.projector_batch_max,
            group_instance_id=settings.projector_instance_id or None,
        )
        projector = Projector(
            conn=conn,
            consumer=consumer,
            producer=producer,
            topics=topics,
            batch_max=settings.projector_batch_max,
            batch_wait_ms=settings.projector_batch_wait_ms,
        )

        async def ready() -> str | None:
            if not projector.running:
                return "kafka consumer not started"
            try:
                async with asyncio.timeout(2), probe_pool.connection() as probe:
                    await probe.execute("SELECT 1")
            except Exception as exc:
                return f"postgres: {exc!r}"
            return None

        ops = await serve_ops(settings.projector_http_host, settings.projector_http_port, ready)
        resources.callback(ops.close)
        projector.subscribe()
        await consumer.start()
        resources.push_async_callback(_quietly, consumer.stop)
        log.info(
            "projecting %s into schema %s as group %s",
            topics.events,
            schema,
            settings.projector_group,
        )
        settle_heap()
        await projector.run(stop)
        log.info("stopped after the last batch")


async def _quietly(close: Callable[[], Awaitable[object]]) -> None:
    """Close a Kafka client on the way out; a second failure must not hide the first one."""
    try:
        await close()
    except Exception:
        log.warning("error while closing", exc_info=True)
