"""Kafka adapters: producer and consumer factories with Jobsprint's guarantees, topic
creation, and the dead-letter hand-off."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from jobsprint.events import DeadLetter, Topics

log = logging.getLogger(__name__)

EXECUTOR_STATE_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""`max.message.bytes` of the executor-state topic: one record holds a running execution's
input (up to the gateway's 1 MiB) and every step's output so far (each capped at 256 KiB)."""


def make_producer(
    bootstrap: str,
    *,
    client_id: str,
    transactional_id: str | None = None,
    linger_ms: int = 2,
    **extra: Any,
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all); transactional when given a transactional id."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        transactional_id=transactional_id,
        request_timeout_ms=15000,
        **extra,
    )


def make_consumer(
    bootstrap: str,
    *topics: str,
    group_id: str | None,
    client_id: str,
    **extra: Any,
) -> AIOKafkaConsumer:
    """A consumer that sees committed data only and never commits on its own."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "client_id": client_id,
        "isolation_level": "read_committed",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100,
        "max_poll_records": 2000,
    }
    options.update(extra)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(
    bootstrap: str, topics: Topics, partitions: int, replication: int = 1
) -> None:
    """Create the commands, events, dead-letter and executor-state topics when missing,
    and check that commands and events are co-partitioned. The events topic is the source
    of truth, so it (and the dead letters) keep everything: retention is infinite."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="jobsprint-admin")
    await admin.start()
    forever = {"retention.ms": "-1", "retention.bytes": "-1"}
    try:
        wanted = [
            NewTopic(topics.commands, partitions, replication),
            NewTopic(topics.events, partitions, replication, topic_configs=forever),
            NewTopic(topics.dead_letter, 1, replication, topic_configs=forever),
            NewTopic(
                topics.executor_state,
                partitions,
                replication,
                topic_configs={
                    "cleanup.policy": "compact",
                    "segment.ms": "60000",
                    "min.cleanable.dirty.ratio": "0.1",
                    "delete.retention.ms": "60000",
                    "max.message.bytes": str(EXECUTOR_STATE_MAX_MESSAGE_BYTES),
                },
            ),
        ]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        for topic in missing:
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
        # fresh topics may show no partitions until their metadata has propagated
        for _ in range(50):
            described = await admin.describe_topics([topics.commands, topics.events])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            if all(counts.get(name) for name in (topics.commands, topics.events)):
                break
            await asyncio.sleep(0.2)
        if counts.get(topics.commands) != counts.get(topics.events):
            raise RuntimeError(
                f"{topics.commands} and {topics.events} must have the same partition count, "
                f"found {counts}"
            )
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="jobsprint-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [t for t in topics.all() if t in existing]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def dead_letter_record(record: ConsumerRecord[bytes, bytes], consumer: str, error: str) -> bytes:
    return DeadLetter.of(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        consumer=consumer,
        error=error,
    ).encode()


async def send_to_dead_letter(
    producer: AIOKafkaProducer,
    topics: Topics,
    record: ConsumerRecord[bytes, bytes],
    consumer: str,
    error: str,
) -> None:
    """Park a message the consumer cannot process, with its origin and the error."""
    log.warning(
        "dead-lettered %s[%d]@%d: %s",
        record.topic,
        record.partition,
        record.offset,
        error,
        extra={"partition": record.partition, "offset": record.offset},
    )
    await producer.send_and_wait(
        topics.dead_letter, dead_letter_record(record, consumer, error), key=record.key
    )
