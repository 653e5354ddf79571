"""`rebuild`: replay the events topic from the beginning into fresh tables in another schema,
with the same fold and writer as the live projector, up to the end offsets taken at start.
Then `compare` tells whether the live read model is what the events say it should be."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from jobsprint.projector import store
from jobsprint.projector.batch import Record, apply_batch
from jobsprint.projector.settings import ProjectorSettings, check_schema_name
from jobsprint.runtime.heap import settle_heap
from jobsprint.runtime.kafka import make_consumer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RebuildSummary:
    schema: str
    events: int
    seconds: float
    events_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_schema_name(now: datetime | None = None) -> str:
    return f"rebuild_{(now or datetime.now(UTC)):%Y%m%d%H%M%S}"


async def rebuild(settings: ProjectorSettings, schema: str | None = None) -> RebuildSummary:
    """Replay into `schema` (dropped and recreated). No consumer group, no notifications,
    no dead letters sent (the live projector sent those already): poison is only logged."""
    schema = check_schema_name(schema or default_schema_name())
    if schema == settings.projector_schema:
        raise ValueError(f"refusing to rebuild into the live schema {schema!r}")
    topic = settings.topics.events
    await store.prepare_schema(settings.database_url, schema, fresh=True)
    conn = await store.connect(settings.database_url, schema)
    consumer = make_consumer(
        settings.kafka_bootstrap,
        group_id=None,
        client_id=f"{settings.projector_group}-rebuild",
        max_poll_records=settings.projector_batch_max,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    settle_heap()
    try:
        started = time.perf_counter()
        partitions = await _partitions(settings.kafka_bootstrap, topic)
        events = await _replay(consumer, conn, topic, partitions, settings.projector_batch_max)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
        await conn.close()
    return RebuildSummary(
        schema=schema,
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(events / seconds, 1) if seconds > 0 else 0.0,
    )


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="jobsprint-projector-rebuild"
    )
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code") or not described.get("partitions"):
        raise RuntimeError(f"cannot read topic {topic}: {described}")
    return sorted(p["partition"] for p in described["partitions"])


async def _replay(
    consumer: AIOKafkaConsumer,
    conn: store.Connection,
    topic: str,
    partitions: list[int],
    batch_max: int,
) -> int:
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
    events = 0

    async def log_poison(record: Record, error: str) -> None:
        log.warning(
            "skipped %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            error,
            extra={"partition": record.partition, "offset": record.offset},
        )

    for tp in set(tps) - pending:
        consumer.pause(tp)
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500, max_records=batch_max)
        records = [r for tp, rs in batches.items() for r in rs if r.offset < ends[tp]]
        if records:
            await apply_batch(conn, topic, records, dead_letter=log_poison, notify=False)
            events += len(records)
        for tp in list(pending):
            # positions move past transaction markers too, so this reaches the end offset
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
                consumer.pause(tp)
    return events
