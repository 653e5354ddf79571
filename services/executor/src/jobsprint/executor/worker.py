"""The executor process: one consumer in the executors' group. Partitions are the unit of
parallelism; for each one it owns, it restores in-flight executions from the state topic and
runs them with a transactional producer of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from jobsprint.executor import telemetry
from jobsprint.executor.limits import RecordLimits, max_message_bytes
from jobsprint.executor.partition import PartitionWorker
from jobsprint.executor.settings import ExecutorSettings
from jobsprint.executor.state import POSITION_KEY, ExecutionState, decode_position
from jobsprint.executor.steps import StepEnvironment
from jobsprint.runtime.kafka import make_consumer, make_producer
from jobsprint.workflows import parse_allow_list

log = logging.getLogger(__name__)

# One transaction's records for a partition in one batch: aiokafka sends a partition's
# batches one request at a time and holds a full batch's sender until it is drained, so
# its default (16 KiB, about two executions' events) made several produce round trips of
# one transaction under load. Below the broker's default `max.message.bytes` (1 MiB).
BATCH_BYTES = 512 * 1024


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Executor) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.release([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.acquire([tp.partition for tp in assigned])


class Executor:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.partitions: dict[int, PartitionWorker] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.http: httpx.AsyncClient | None = None
        self.stopping = asyncio.Event()
        self.ready = False
        self.limits = RecordLimits()  # until run() has read what the topics accept

    @property
    def env(self) -> StepEnvironment:
        assert self.http is not None
        return StepEnvironment(
            http=self.http,
            allow_list=parse_allow_list(self.settings.http_allow_list),
            max_response_bytes=self.settings.http_max_response_bytes,
        )

    # -- partitions -------------------------------------------------------------------------

    async def acquire(self, partitions: list[int]) -> None:
        for partition in partitions:
            if partition in self.partitions:
                continue
            producer = make_producer(
                self.settings.kafka_bootstrap,
                client_id=f"executor-p{partition}",
                transactional_id=self.settings.transactional_id(partition),
                max_request_size=self.limits.max_request_size,
                max_batch_size=BATCH_BYTES,
            )
            await producer.start()  # initialises the transactional id: fences a former owner
            restored, position = await self._restore(partition)
            if position is not None and self.consumer is not None:
                # resume where the last committed transaction left off (without a position
                # record, e.g. the first start after an upgrade: the group's committed offset)
                self.consumer.seek(TopicPartition(self.topics.commands, partition), position)
            worker = PartitionWorker(
                partition,
                self.topics,
                producer,
                self.env,
                self.settings.executor_commit_interval_ms / 1000,
                self.limits,
            )
            worker.start(restored)
            self.partitions[partition] = worker
            log.info(
                "acquired partition %d, resumed %d executions",
                partition,
                len(restored),
                extra={"partition": partition},
            )

    async def release(self, partitions: list[int]) -> None:
        for partition in partitions:
            worker = self.partitions.pop(partition, None)
            if worker is not None:
                await worker.stop()
                await self._publish_positions([worker])
                log.info("released partition %d", partition, extra={"partition": partition})

    async def _restore(self, partition: int) -> tuple[list[ExecutionState], int | None]:
        """Read the partition of the compacted state topic to its end: the last snapshot of
        each execution that has not ended, and the commands position committed with them
        (None when no transaction has recorded one yet)."""
        tp = TopicPartition(self.topics.executor_state, partition)
        reader = make_consumer(
            self.settings.kafka_bootstrap,
            group_id=None,
            client_id=f"executor-restore-p{partition}",
            max_partition_fetch_bytes=max(self.limits.state.bytes, 1_048_576),
        )
        await reader.start()
        states: dict[bytes, ExecutionState] = {}
        position: int | None = None
        try:
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
            await reader.seek_to_beginning(tp)
            while await reader.position(tp) < end:
                batch = await reader.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.key is None:
                        continue
                    if record.key == POSITION_KEY:
                        if record.value is not None:
                            position = decode_position(record.value)
                        continue
                    if record.value is None:
                        states.pop(record.key, None)
                    else:
                        states[record.key] = ExecutionState.decode(record.value)
        finally:
            await reader.stop()
        return list(states.values()), position

    async def _read_limits(self) -> RecordLimits:
        """The record limits of the settings, lowered to what the topics accept: topics
        created by an operator, or before a limit was raised, may take less."""
        topics = self.topics
        names = [topics.events, topics.dead_letter, topics.executor_state]
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap, client_id="executor-admin"
        )
        accepted: dict[str, int] = {}
        try:
            await admin.start()
            answers = await admin.describe_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
                    for name in names
                ]
            )
            accepted = max_message_bytes(answer.to_object() for answer in answers)
        except Exception as exc:
            log.warning("cannot read the topics' max.message.bytes (%s): assuming 1 MiB", exc)
        finally:
            await admin.close()
        limits = self.settings.record_limits(accepted)
        for limit in (limits.event, limits.state):
            if not limit.source.startswith("JOBSPRINT_"):
                log.warning(
                    "record limit lowered to %d bytes by the %s: executions whose records "
                    "would be larger fail with too_large (raise the topic's max.message.bytes "
                    "to allow more)",
                    limit.bytes,
                    limit.source,
                )
        return limits

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        self.limits = await self._read_limits()
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=30)
        self.consumer = make_consumer(
            settings.kafka_bootstrap,
            group_id=settings.group_id,
            client_id="executor",
            max_poll_records=500,
            fetch_max_wait_ms=20,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            rebalance_timeout_ms=30000,
        )
        self.consumer.subscribe([self.topics.commands], listener=_Rebalance(self))
        await self.consumer.start()
        self.ready = True
        paused = False
        lag_reported = 0.0
        try:
            while not self.stopping.is_set():
                failed = next((w for w in self.partitions.values() if w.failed), None)
                if failed is not None:
                    raise RuntimeError(f"partition {failed.partition} failed") from failed.failed
                in_flight = sum(w.in_flight for w in self.partitions.values())
                if in_flight >= settings.executor_max_in_flight and not paused:
                    self.consumer.pause(*self.consumer.assignment())
                    paused = True
                elif paused and in_flight < settings.executor_max_in_flight * 0.8:
                    self.consumer.resume(*self.consumer.assignment())
                    paused = False
                batch = await self.consumer.getmany(timeout_ms=100)
                for tp, records in batch.items():
                    worker = self.partitions.get(tp.partition)
                    if worker is None:
                        # fetched before the partition was set up (or after it was revoked):
                        # fetch it again rather than lose it
                        if tp in self.consumer.assignment():
                            self.consumer.seek(tp, records[0].offset)
                        continue
                    for record in records:
                        worker.handle(record)
                now = asyncio.get_running_loop().time()
                if now - lag_reported > 1.0:
                    lag_reported = now
                    await self._publish_positions(list(self.partitions.values()))
                    await self._report_lag()
        finally:
            await self.shutdown()

    async def _publish_positions(self, workers: list[PartitionWorker]) -> None:
        """Commit the group's offsets to the positions the transactions recorded, so that
        tools reading consumer-group lag see the executors' progress. Informational: the
        executor resumes from its position records, never from these."""
        consumer = self.consumer
        offsets = {
            TopicPartition(self.topics.commands, w.partition): w.committed_offset
            for w in workers
            if w.committed_offset is not None and w.committed_offset != w.published_offset
        }
        if consumer is None or not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # e.g. during a rebalance: the next round will do
            log.info("could not publish commands positions (%s)", exc)
            return
        # what was sent, not what is committed now: a transaction may have ended meanwhile
        for w in workers:
            sent = offsets.get(TopicPartition(self.topics.commands, w.partition))
            if sent is not None:
                w.published_offset = sent

    async def _report_lag(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            lag = max(0, highwater - position)
            telemetry.CONSUMER_LAG.labels("executor", str(tp.partition)).set(lag)

    async def shutdown(self) -> None:
        """Stop taking work, let running steps finish within the grace period, commit, and
        leave the group so the partitions move at once."""
        self.ready = False
        consumer = self.consumer
        if consumer is not None:
            consumer.pause(*consumer.assignment())
        await asyncio.gather(
            *(
                w.drain_running(self.settings.executor_grace_seconds)
                for w in self.partitions.values()
            )
        )
        await self.release(list(self.partitions))
        if consumer is not None:
            await consumer.stop()
        if self.http is not None:
            await self.http.aclose()
