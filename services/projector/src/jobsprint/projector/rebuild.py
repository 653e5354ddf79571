"""`rebuild`: replay the events topic from the beginning into fresh tables in another schema,
with the same fold and writer as the live projector, up to the end offsets taken at start.
Then `compare` tells whether the live read model is what the events say it should be.

With `workers` > 1 the partitions are split over that many OS processes, each with its own
consumer and Postgres connection, all writing into the one schema the parent prepared.
They cannot meet, because every row the projector writes belongs to one partition:
`executions` (id), `execution_steps` (execution id, step id), `execution_logs` (execution
id, seq) and `projector_deleted_executions` (execution id) are keyed by execution id, and
all events of an execution are on the partition its id hashes to (the commands are keyed by
it and an executor appends the events to the partition of the commands it consumed);
`projector_checkpoints` is keyed by (topic, partition). The fold reads no other execution's
rows, there are no sequences, counters or foreign keys, notifications are off and the
migrations run once, in the parent. So no two workers lock, insert or update the same row;
different keys in the same unique index do not wait for each other. (Adding partitions to
a topic in use would break the first premise; the live projector's per-execution order
rests on it too.)
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from jobsprint.projector import store
from jobsprint.projector.batch import Record, apply_batch
from jobsprint.projector.settings import ProjectorSettings, check_schema_name
from jobsprint.runtime.heap import settle_heap
from jobsprint.runtime.kafka import make_consumer
from jobsprint.runtime.logs import setup_logging

log = logging.getLogger(__name__)


class RebuildFailed(Exception):
    """A worker did not replay its partitions: the schema is incomplete."""

    def __init__(self, partitions: Sequence[int], reason: str) -> None:
        super().__init__(f"replay of partitions {list(partitions)} failed: {reason}")
        self.partitions = list(partitions)


@dataclass(frozen=True, slots=True)
class RebuildSummary:
    schema: str
    events: int
    seconds: float
    events_per_s: float
    workers: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_schema_name(now: datetime | None = None) -> str:
    return f"rebuild_{(now or datetime.now(UTC)):%Y%m%d%H%M%S}"


def split_partitions(partitions: Sequence[int], workers: int) -> list[list[int]]:
    """Round-robin: one share per worker, never more shares than partitions."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    ordered = sorted(partitions)
    n = min(workers, len(ordered))
    return [ordered[i::n] for i in range(n)]


async def rebuild(
    settings: ProjectorSettings, schema: str | None = None, workers: int = 1
) -> RebuildSummary:
    """Replay into `schema` (dropped and recreated). No consumer group, no notifications,
    no dead letters sent (the live projector sent those already): poison is only logged.
    `workers` processes share the partitions out (one replays in this process). `seconds`
    runs from finding the partitions until the last worker finished, so it includes
    starting the worker processes."""
    schema = check_schema_name(schema or default_schema_name())
    if schema == settings.projector_schema:
        raise ValueError(f"refusing to rebuild into the live schema {schema!r}")
    await store.prepare_schema(settings.database_url, schema, fresh=True)
    started = time.perf_counter()
    shares = split_partitions(
        await _partitions(settings.kafka_bootstrap, settings.topics.events), workers
    )
    if len(shares) == 1:
        [share] = shares
        try:
            counts = [await _replay_share(settings, schema, share)]
        except Exception as exc:
            log.exception("replay of partitions %s failed", share)
            raise RebuildFailed(share, f"{type(exc).__name__}: {exc}") from exc
    else:
        counts = await asyncio.to_thread(_replay_in_processes, settings, schema, shares)
    seconds = time.perf_counter() - started
    events = sum(counts)
    return RebuildSummary(
        schema=schema,
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(events / seconds, 1) if seconds > 0 else 0.0,
        workers=len(shares),
    )


def _replay_in_processes(
    settings: ProjectorSettings, schema: str, shares: list[list[int]]
) -> list[int]:
    """One spawned process per share; their event counts. The first worker that fails
    (an error, or an exit without a count: killed) stops the others and fails the rebuild."""
    context = multiprocessing.get_context("spawn")
    running: dict[Connection, tuple[list[int], BaseProcess]] = {}
    counts: list[int] = []
    try:
        for share in shares:
            receiving, sending = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker,
                args=(settings, schema, share, sending),
                name=f"rebuild-{'-'.join(map(str, share))}",
                daemon=True,  # ended with the parent
            )
            worker.start()
            sending.close()  # the worker's copy stays open: EOF here once it has exited
            running[receiving] = (share, worker)
        while running:
            for ready in wait(list(running)):
                assert isinstance(ready, Connection)
                share, process = running.pop(ready)
                with ready:
                    counts.append(_outcome(share, ready, process))
    finally:
        for _, process in running.values():
            process.terminate()
        for receiving, (_, process) in running.items():
            process.join()
            receiving.close()
    return counts


def _outcome(share: list[int], results: Connection, process: BaseProcess) -> int:
    """The event count a finished worker sent, or RebuildFailed with why there is none."""
    try:
        outcome: int | str = results.recv()
    except EOFError:  # exited without a word: killed, or died in start-up
        outcome = ""
    process.join()
    if isinstance(outcome, int) and process.exitcode == 0:
        return outcome
    if isinstance(outcome, str) and outcome:
        raise RebuildFailed(share, outcome)
    raise RebuildFailed(share, _exit_reason(process.exitcode))


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"worker killed by signal {-exitcode}"
    return f"worker exited with code {exitcode} without a result"


def _worker(
    settings: ProjectorSettings, schema: str, partitions: list[int], results: Connection
) -> None:
    """A worker process: replay `partitions`, send back the event count or what failed."""
    setup_logging("projector", settings.log_level)
    try:
        events = uvloop.run(_replay_share(settings, schema, partitions))
    except BaseException as exc:
        log.exception("replay of partitions %s failed", partitions)
        results.send(f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    results.send(events)


async def _replay_share(settings: ProjectorSettings, schema: str, partitions: list[int]) -> int:
    """Replay `partitions` with a consumer and a connection of their own."""
    conn = await store.connect(settings.database_url, schema)
    try:
        consumer = make_consumer(
            settings.kafka_bootstrap,
            group_id=None,
            client_id=f"{settings.projector_group}-rebuild",
            max_poll_records=settings.projector_batch_max,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            settle_heap()
            return await _replay(
                consumer, conn, settings.topics.events, partitions, settings.projector_batch_max
            )
        finally:
            await consumer.stop()
    finally:
        await conn.close()


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
