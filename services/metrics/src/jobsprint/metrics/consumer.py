"""The Kafka side of loading: read the events topic in batches, fold them, insert the rows,
then checkpoint.

Why a kill -9 at any moment neither loses nor double-counts an execution:

* Positions live in ClickHouse (`checkpoints`, one row per partition: the next offset to
  load), not in Kafka. On start the consumer seeks every partition to its checkpoint, or to
  the beginning when there is none.
* A batch is written in a fixed order: its rows (`steps`, `finished_executions`, then
  `executions`), and only then the checkpoint of every partition it read (the position
  after the batch; the table keeps the highest per partition). A checkpoint therefore never
  runs ahead of the rows: a crash before it loses nothing, because the events are read
  again. `finished_executions` goes before `executions` because its rows are derived from
  the execution's state: were the executions row stored first, a crash there would leave a
  replay nothing new to fold, and the finished row would never be written.
* Reading them again cannot double-count. A row is an execution's (or step's) whole state,
  not an increment, versioned by the `seq` of the last event folded into it, and the tables
  are ReplacingMergeTree(version) read with FINAL: one row per execution however often it
  was written. Versions are per row, so a crash between the two tables' inserts leaves each
  row with the version of its own content.
* The consumer also skips what it already folded: after a restart its cache is empty, so it
  loads the stored state of each execution a batch touches (deleted ones included), and the
  fold ignores every event whose `seq` is not above its row's version. An execution whose
  ExecutionRequested (seq 1) is in the batch needs no stored state: folding from its first
  event rebuilds the stored rows exactly.
* The rows a replay writes equal the rows first written, because folding is deterministic
  and ordered (one execution's events share a partition and `seq` is gap-free from 1).

Partitions are assigned by hand, not by group rebalancing: one loader owns a ClickHouse
database (with chDB one process owns the folder anyway), and a second loader on the same
server would only rewrite identical rows. Positions are also committed to Kafka under
`metrics_group`, after the checkpoint and for the operators' lag tools only.

Poison messages go to the dead-letter topic and loading goes on; a ClickHouse or Kafka error
ends `run()` with the exception and no checkpoint, and the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from jobsprint.events import (
    TERMINAL_STATUSES,
    Envelope,
    LogRecorded,
    Payload,
    Topics,
    UndecodableMessage,
    decode,
)
from jobsprint.metrics import telemetry
from jobsprint.metrics.loader import ExecutionState, Fold, LoadError, Outcome
from jobsprint.metrics.store import LoaderStore
from jobsprint.runtime.kafka import send_to_dead_letter

log = logging.getLogger(__name__)

# Inserts: a batch goes to ClickHouse when it holds batch_max_rows events, when its oldest
# event waited batch_max_seconds, or at once when the topic goes quiet, but then not sooner
# than batch_max_seconds after the previous insert. A trickle of events makes one insert per
# batch_max_seconds (ClickHouse wants few, large inserts); an event after a quiet spell is
# queryable within one poll.
POLL_MS = 100  # longest wait for new records
PARTITION_REFRESH_S = 30.0  # how often to look for partitions added to the topic
CACHE_MAX = 100_000  # unfinished executions kept in memory; evicted ones are loaded back

Record: TypeAlias = ConsumerRecord[bytes, bytes]


# Log lines are about 6 of every 13 events and the loader ignores them: they are recognised
# by their type near the start of the JSON (the encoder writes `id`, then `type`) and
# skipped without decoding. Anything else, and a log line in any other layout, is decoded.
_LOG_LINE = b'"type":"' + LogRecorded.TYPE.encode() + b'"'


def is_log_line(value: bytes | None) -> bool:
    return value is not None and _LOG_LINE in value[:128]


def decode_all(
    records: list[Record],
) -> tuple[list[tuple[Record, Envelope[Payload]]], list[tuple[Record, str]], int]:
    """Decoded envelopes with their records, the records that are not messages, and how
    many log lines were skipped undecoded."""
    events: list[tuple[Record, Envelope[Payload]]] = []
    undecodable: list[tuple[Record, str]] = []
    skipped = 0
    for record in records:
        if is_log_line(record.value):
            skipped += 1
            continue
        try:
            events.append((record, decode(record.value)))
        except UndecodableMessage as exc:
            undecodable.append((record, exc.reason))
    return events, undecodable, skipped


@dataclass
class Folded:
    executions: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    finished: list[tuple[Any, ...]] = field(default_factory=list)
    refused: list[tuple[Record, str]] = field(default_factory=list)  # for the dead letters
    outcomes: Counter[Outcome] = field(default_factory=Counter)


def fold_all(
    known: dict[str, ExecutionState], events: list[tuple[Record, Envelope[Payload]]]
) -> Folded:
    """Fold a batch into `known`; the rows to write and the events that could not apply."""
    fold = Fold(known)
    folded = Folded()
    for record, envelope in events:
        try:
            folded.outcomes[fold.apply(envelope)] += 1
        except LoadError as exc:
            folded.refused.append((record, str(exc)))
    folded.finished = fold.finished_rows()
    folded.executions, folded.steps = fold.rows()
    return folded


class EventsLoader:
    """Loads the events topic into ClickHouse until `stop()`."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: LoaderStore,
        topics: Topics,
        bootstrap: str,
        batch_max_rows: int,
        batch_max_seconds: float,
        commit_to_kafka: bool = True,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._topics = topics
        self._bootstrap = bootstrap
        self._max_rows = batch_max_rows
        self._max_seconds = batch_max_seconds
        self._commit_to_kafka = commit_to_kafka
        self._cache: dict[str, ExecutionState] = {}
        self._pending: list[Record] = []
        self._pending_since = 0.0
        self._flushed_at = 0.0
        self._checkpointed: dict[int, int] = {}
        self._stop = asyncio.Event()
        self.running = False
        self.caught_up = asyncio.Event()  # set when every partition was read to its end once

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until stopped; the pending batch is loaded before returning. A ClickHouse
        or Kafka error propagates (the pending batch is not checkpointed)."""
        loop = asyncio.get_running_loop()
        await self._assign()
        next_refresh = loop.time() + PARTITION_REFRESH_S
        self.running = True
        try:
            while not self._stop.is_set():
                timeout_ms = POLL_MS
                if self._pending:
                    left = self._pending_since + self._max_seconds - loop.time()
                    timeout_ms = max(0, min(POLL_MS, int(left * 1000)))
                room = max(1, self._max_rows - len(self._pending))
                batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=room)
                received = 0
                for records in batch.values():
                    if records and not self._pending:
                        self._pending_since = loop.time()
                    self._pending.extend(records)
                    received += len(records)
                now = loop.time()
                if self._pending and (
                    len(self._pending) >= self._max_rows
                    or now - self._pending_since >= self._max_seconds
                    # quiet topic: insert at once, unless the last insert was just now
                    or (received == 0 and now - self._flushed_at >= self._max_seconds)
                ):
                    await self.flush()
                    self._flushed_at = loop.time()
                await self._observe_lag(idle=received == 0 and not self._pending)
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + PARTITION_REFRESH_S
                    await self._refresh_partitions()
            await self.flush()
        finally:
            self.running = False

    async def flush(self) -> None:
        """Fold, insert and checkpoint everything read so far."""
        records, self._pending = self._pending, []
        if not records:
            return
        started = time.perf_counter()
        # decoding and folding are CPU work: off the event loop, so the HTTP API stays quick
        events, undecodable, log_lines = await asyncio.to_thread(decode_all, records)
        telemetry.EVENTS.labels(Outcome.IGNORED.value).inc(log_lines)
        for record, reason in undecodable:
            await self._dead_letter(record, reason)
        await self._load_missing(envelope for _, envelope in events)
        folded = await asyncio.to_thread(fold_all, self._cache, events)
        for record, reason in folded.refused:
            await self._dead_letter(record, reason)
        for outcome, count in folded.outcomes.items():
            telemetry.EVENTS.labels(outcome.value).inc(count)
        executions, steps, finished = folded.executions, folded.steps, folded.finished
        await self._store.write(executions, steps, finished)
        telemetry.ROWS_LOADED.labels("executions").inc(len(executions))
        telemetry.ROWS_LOADED.labels("steps").inc(len(steps))
        telemetry.ROWS_LOADED.labels("finished_executions").inc(len(finished))
        await self._checkpoint()
        self._evict()
        telemetry.BATCH_EVENTS.observe(len(records))
        telemetry.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _load_missing(self, envelopes: Iterable[Envelope[Payload]]) -> None:
        """Put the stored state of executions the batch touches into the cache, unless the
        batch starts them."""
        seen: set[str] = set()
        missing: dict[str, str] = {}
        for envelope in envelopes:
            execution_id = envelope.execution_id
            if execution_id in seen:
                continue
            seen.add(execution_id)
            if execution_id not in self._cache and not Fold.starts_execution(envelope):
                missing[execution_id] = envelope.workspace_id
        if missing:
            self._cache.update(await self._store.load(missing))

    async def _checkpoint(self) -> None:
        positions: dict[int, int] = {}
        for tp in self._consumer.assignment():
            position = await self._consumer.position(tp)
            if self._checkpointed.get(tp.partition) != position:
                positions[tp.partition] = position
        await self._store.save_checkpoints(self._topics.events, positions)
        self._checkpointed.update(positions)
        if self._commit_to_kafka and positions:
            offsets = {
                TopicPartition(self._topics.events, p): OffsetAndMetadata(o, "")
                for p, o in positions.items()
            }
            try:
                await self._consumer.commit(offsets)
            except Exception as exc:  # informational only: the checkpoint above is what counts
                log.warning("could not commit positions to Kafka: %s", exc)

    def _evict(self) -> None:
        """Keep executions still running: a finished one hardly gets another event (a
        deletion), and is loaded back from ClickHouse if it does."""
        done = [
            execution_id
            for execution_id, state in self._cache.items()
            if state.deleted or state.status in TERMINAL_STATUSES
        ]
        for execution_id in done:
            del self._cache[execution_id]
        excess = len(self._cache) - CACHE_MAX
        if excess > 0:
            for execution_id in list(self._cache)[:excess]:
                del self._cache[execution_id]

    async def _dead_letter(self, record: Record, error: str) -> None:
        await send_to_dead_letter(self._producer, self._topics, record, telemetry.CONSUMER, error)
        telemetry.DEAD_LETTERS.labels(telemetry.CONSUMER).inc()
        telemetry.EVENTS.labels("dead_lettered").inc()

    async def _partitions(self) -> set[int]:
        return await topic_partitions(self._bootstrap, self._topics.events)

    async def _assign(self) -> None:
        partitions = await self._partitions()
        if not partitions:
            raise RuntimeError(f"topic {self._topics.events} does not exist")
        await self._assign_partitions(partitions)

    async def _assign_partitions(self, partitions: set[int]) -> None:
        checkpoints = await self._store.checkpoints(self._topics.events)
        tps = [TopicPartition(self._topics.events, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        for tp in tps:
            if tp.partition in checkpoints:
                self._consumer.seek(tp, checkpoints[tp.partition])
            else:
                await self._consumer.seek_to_beginning(tp)
        self._checkpointed = dict(checkpoints)
        self._cache.clear()
        log.info(
            "loading %s partitions %s from %s",
            self._topics.events,
            sorted(partitions),
            {p: checkpoints.get(p, "beginning") for p in sorted(partitions)},
        )

    async def _refresh_partitions(self) -> None:
        partitions = await self._partitions()
        assigned = {tp.partition for tp in self._consumer.assignment()}
        if partitions - assigned:
            await self.flush()
            await self._assign_partitions(partitions | assigned)

    async def _observe_lag(self, *, idle: bool) -> None:
        behind = 0
        for tp in self._consumer.assignment():
            end = self._consumer.last_stable_offset(tp)
            if end is None:
                end = self._consumer.highwater(tp)
            if end is None:
                behind += 1
                continue
            position = await self._consumer.position(tp)
            lag = max(0, end - position)
            behind += lag
            telemetry.LAG.labels(telemetry.CONSUMER, str(tp.partition)).set(lag)
        if idle and behind == 0:
            self.caught_up.set()


async def topic_partitions(bootstrap: str, topic: str) -> set[int]:
    """The partition ids of `topic`; empty when it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="jobsprint-metrics")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {
        int(p["partition"])
        for d in described
        if d["topic"] == topic and d["error_code"] == 0
        for p in d["partitions"]
    }
