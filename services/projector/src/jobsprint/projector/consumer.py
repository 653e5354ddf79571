"""The live projection loop: a consumer-group member that applies batches of the events
topic to the read model. Postgres holds the positions; Kafka's committed offsets follow
them (best effort) only so that ops tools see the consumer-group lag."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from jobsprint.events import Topics
from jobsprint.projector import metrics, store
from jobsprint.projector.batch import Record, apply_batch
from jobsprint.runtime.kafka import send_to_dead_letter

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200  # also how quickly a stop request is noticed when idle
KAFKA_COMMIT_INTERVAL_S = 1.0
LAG_INTERVAL_S = 1.0


class CheckpointAheadOfLog(RuntimeError):
    """A stored position lies past the end of its partition: the read model was built from
    another Kafka cluster (or a deleted and recreated topic). Waiting would never end."""


class Projector:
    """Applies the events topic to the read model. Built with its adapters (a Postgres
    connection used by this loop only, a subscribed-to-nothing consumer, a started producer
    for dead letters); `subscribe()` then `run()`."""

    def __init__(
        self,
        *,
        conn: store.Connection,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: Topics,
        batch_max: int,
        batch_wait_ms: int = 0,
    ) -> None:
        self._conn = conn
        self._consumer = consumer
        self._producer = producer
        self._topics = topics
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_ms / 1000
        # Held while a batch is applied; a rebalance waits for it, so a revoked partition's
        # batch is committed (or not at all) before another member reads its checkpoint.
        self._batch_lock = asyncio.Lock()
        self._uncommitted: dict[TopicPartition, int] = {}  # positions not yet told to Kafka
        self._last_kafka_commit = 0.0
        self._last_lag = 0.0
        self._fatal: CheckpointAheadOfLog | None = None
        self.running = False

    def subscribe(self) -> None:
        self._consumer.subscribe([self._topics.events], listener=_SeekToCheckpoints(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Apply batches until `stop` is set; the batch in hand is finished first."""
        self.running = True
        try:
            while not stop.is_set():
                if self._fatal is not None:
                    raise self._fatal
                batches = await self._consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self._batch_max
                )
                records = [r for rs in batches.values() for r in rs]
                if records and len(records) < self._batch_max and self._batch_wait_s > 0:
                    records += await self._top_up(len(records))
                if records:
                    await self.apply(records)
                now = time.monotonic()
                if now - self._last_kafka_commit >= KAFKA_COMMIT_INTERVAL_S:
                    await self.commit_to_kafka()
                if now - self._last_lag >= LAG_INTERVAL_S:
                    await self._measure_lag()
            await self.commit_to_kafka()
        finally:
            self.running = False

    async def _top_up(self, have: int) -> list[Record]:
        """A small batch costs nearly the round trips of a full one: wait a moment for what
        the executors are about to commit, then take what has arrived, without blocking."""
        await asyncio.sleep(self._batch_wait_s)
        more = await self._consumer.getmany(timeout_ms=0, max_records=self._batch_max - have)
        return [r for rs in more.values() for r in rs]

    async def apply(self, records: Sequence[Record]) -> None:
        started = time.perf_counter()
        async with self._batch_lock:
            assigned = self._consumer.assignment()
            # a rebalance may have taken partitions away while this batch waited
            records = [r for r in records if TopicPartition(r.topic, r.partition) in assigned]
            if not records:
                return
            result = await apply_batch(
                self._conn,
                self._topics.events,
                records,
                dead_letter=self._dead_letter,
                notify=True,
            )
        for partition, offset in result.positions.items():
            self._uncommitted[TopicPartition(self._topics.events, partition)] = offset
        metrics.BATCH_SIZE.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        for event_type, count in result.event_types.items():
            metrics.EVENTS.labels(event_type).inc(count)
        log.debug(
            "applied batch: %d records, %d applied, %d skipped, %d dead-lettered",
            len(records),
            result.applied,
            result.skipped,
            result.dead_letters,
        )

    async def commit_to_kafka(self) -> None:
        """Tell Kafka the positions already stored in Postgres. Best effort: Postgres is the
        truth, this only feeds consumer-group lag in ops tools."""
        self._last_kafka_commit = time.monotonic()
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in self._uncommitted.items() if tp in assigned}
        self._uncommitted.clear()
        if not offsets:
            return
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), timeout=10)
        except (KafkaError, TimeoutError) as exc:
            log.info("could not commit offsets to Kafka (they are safe in Postgres): %r", exc)

    async def _dead_letter(self, record: Record, error: str) -> None:
        await send_to_dead_letter(self._producer, self._topics, record, metrics.CONSUMER, error)
        metrics.DEAD_LETTERS.labels(metrics.CONSUMER).inc()

    async def _measure_lag(self) -> None:
        self._last_lag = time.monotonic()
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(self._consumer.position(tp), timeout=1)
            except (KafkaError, TimeoutError):
                continue
            metrics.CONSUMER_LAG.labels(metrics.CONSUMER, str(tp.partition)).set(
                max(highwater - position, 0)
            )

    async def _partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._batch_lock:
            checkpoints = await store.read_checkpoints(self._conn, self._topics.events)
            ahead = await self._checkpoints_past_end(checkpoints, assigned)
            if ahead:
                # raised from run(): the rebalance listener's own errors are only logged
                self._fatal = CheckpointAheadOfLog(
                    f"checkpoints of {self._topics.events} lie past the end of the log"
                    f" (partition: (checkpoint, end) {ahead}): this read model was built from"
                    " another Kafka cluster or an older copy of the topic. Rebuild it"
                    " (`jobsprint-projector rebuild`) or point the projector at an empty"
                    " database."
                )
                return
            from_start = []
            for tp in sorted(assigned):
                if tp.partition in checkpoints:
                    self._consumer.seek(tp, checkpoints[tp.partition])
                else:
                    from_start.append(tp)
            if from_start:
                await self._consumer.seek_to_beginning(*from_start)
        log.info(
            "assigned partitions %s, resuming from checkpoints %s",
            sorted(tp.partition for tp in assigned),
            {tp.partition: checkpoints.get(tp.partition, "start") for tp in sorted(assigned)},
        )

    async def _checkpoints_past_end(
        self, checkpoints: dict[int, int], assigned: set[TopicPartition]
    ) -> dict[int, tuple[int, int]]:
        """{partition: (checkpoint, end offset)} of every checkpoint the log does not reach."""
        stored = [tp for tp in assigned if tp.partition in checkpoints]
        if not stored:
            return {}
        ends = await self._consumer.end_offsets(stored)
        return {
            tp.partition: (checkpoints[tp.partition], ends[tp])
            for tp in sorted(stored)
            if checkpoints[tp.partition] > ends[tp]
        }

    async def _partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch_lock:  # lets the batch in flight commit first
            for tp in revoked:
                self._uncommitted.pop(tp, None)
                try:
                    metrics.CONSUMER_LAG.remove(metrics.CONSUMER, str(tp.partition))
                except KeyError:
                    pass
        if revoked:
            log.info("revoked partitions %s", sorted(tp.partition for tp in revoked))


class _SeekToCheckpoints(ConsumerRebalanceListener):  # type: ignore[misc]
    """Positions come from `projector_checkpoints`, never from Kafka's committed offsets."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._projector._partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._projector._partitions_assigned(assigned)
