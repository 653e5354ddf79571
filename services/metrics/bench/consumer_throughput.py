"""Loader throughput: the service's aiokafka loader vs a minimal faust-streaming agent doing the
same work (decode, fold, insert into chDB in batches), for docs/adr/0001.

    python services/metrics/bench/consumer_throughput.py produce --events 200000
        -> creates a fresh 6-partition topic, fills it, prints its prefix
    python services/metrics/bench/consumer_throughput.py aiokafka --prefix P [--work load|decode]
    python services/metrics/bench/consumer_throughput.py faust    --prefix P [--work load|decode]

Each consumer run is its own process with its own chDB folder (chDB: one folder per process)
and reads the whole topic from the beginning; it prints events/s measured from its first
event to its last, so start-up and group joining are not counted. `--work decode` only
decodes (framework overhead alone); `load` also folds and inserts into ClickHouse; `count`
(faust only) counts messages in a bare `async for` over the stream. faust is
not a dependency of the service: run the faust mode from an environment that has
faust-streaming installed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from jobsprint.events import Topics, decode, encode
from jobsprint.metrics.clickhouse import AsyncClickHouse, ChdbClickHouse
from jobsprint.metrics.loader import ExecutionState, Fold
from jobsprint.metrics.schema import create_schema
from jobsprint.metrics.store import LoaderStore

BOOTSTRAP = os.environ.get("JOBSPRINT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 6
BATCH = 5000


def generate_events(count: int) -> list[Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.integration.metrics.dataset import generate

    executions = generate(n=count // 7 + 1, seed=1, days=30).events()
    return executions[:count]


async def produce(count: int) -> None:
    from jobsprint.runtime.kafka import ensure_topics, make_producer

    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    await ensure_topics(BOOTSTRAP, topics, PARTITIONS)
    events = generate_events(count)
    producer = make_producer(BOOTSTRAP, client_id="bench", linger_ms=20, max_batch_size=262144)
    await producer.start()
    try:
        sent = [await producer.send(topics.events, encode(e), key=e.key) for e in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    print(json.dumps({"prefix": topics.prefix, "events": len(events)}))


class Work:
    """The same work for both consumers: decode a batch, fold it, insert the rows."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.cache: dict[str, ExecutionState] = {}
        self.store: LoaderStore | None = None
        if mode == "load":
            folder = Path(tempfile.mkdtemp(prefix="bench-chdb-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            ch = ChdbClickHouse(folder)
            create_schema(ch, "bench")
            self.store = LoaderStore(AsyncClickHouse(ch), "bench")
        self.done = 0
        self.first = 0.0
        self.last = 0.0

    async def batch(self, values: list[bytes]) -> None:
        if not self.first:
            self.first = time.perf_counter()
        envelopes = [decode(v) for v in values]
        if self.store is not None:
            fold = Fold(self.cache)
            for envelope in envelopes:
                fold.apply(envelope)
            finished = fold.finished_rows()
            executions, steps = fold.rows()
            await self.store.write(executions, steps, finished)
        self.done += len(values)
        self.last = time.perf_counter()

    def report(self, consumer: str) -> str:
        seconds = self.last - self.first
        return json.dumps(
            {
                "consumer": consumer,
                "work": self.mode,
                "events": self.done,
                "seconds": round(seconds, 2),
                "events_per_s": round(self.done / seconds) if seconds else None,
            }
        )


async def run_aiokafka(prefix: str, total: int, mode: str) -> None:
    """The service's loader itself (batching, checkpoints) when mode is load; the bare
    getmany loop when decode."""
    from jobsprint.metrics.consumer import EventsLoader
    from jobsprint.runtime.kafka import make_consumer, make_producer

    topics = Topics(prefix)
    consumer = make_consumer(BOOTSTRAP, group_id=None, client_id="bench", max_poll_records=BATCH)
    await consumer.start()
    work = Work(mode)
    if mode == "load":
        assert work.store is not None
        producer = make_producer(BOOTSTRAP, client_id="bench")
        await producer.start()
        loader = EventsLoader(
            consumer=consumer,
            producer=producer,
            store=work.store,
            topics=topics,
            bootstrap=BOOTSTRAP,
            batch_max_rows=BATCH,
            batch_max_seconds=1.0,
            commit_to_kafka=False,
        )
        original_flush = loader.flush

        async def timed_flush() -> None:
            pending = len(loader._pending)
            if pending and not work.first:
                work.first = time.perf_counter()
            await original_flush()
            work.done += pending
            work.last = time.perf_counter()
            if work.done >= total:
                loader.stop()

        loader.flush = timed_flush  # type: ignore[method-assign]
        await loader.run()
        await producer.stop()
    else:  # decode (count is faust's bare loop; here it is the same getmany loop)
        from aiokafka import TopicPartition

        consumer.assign([TopicPartition(topics.events, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        while work.done < total:
            batch = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            values = [r.value for records in batch.values() for r in records if r.value]
            if values:
                if mode == "count":
                    work.first = work.first or time.perf_counter()
                    work.done += len(values)
                    work.last = time.perf_counter()
                else:
                    await work.batch(values)
    await consumer.stop()
    print(work.report("aiokafka"))


def run_faust(prefix: str, total: int, mode: str) -> None:
    import faust

    scratch = Path(tempfile.mkdtemp(prefix="bench-faust-"))
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        datadir=str(scratch),  # faust keeps a data folder; not in the working directory
        broker=f"kafka://{BOOTSTRAP}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=BATCH,
    )
    topic = app.topic(Topics(prefix).events, value_type=bytes, key_type=bytes)
    work = Work(mode)

    @app.agent(topic)
    async def load(stream: Any) -> None:
        if mode == "count":  # the bare per-message iteration, no batching, no work
            async for _ in stream:
                work.first = work.first or time.perf_counter()
                work.done += 1
                if work.done >= total:
                    work.last = time.perf_counter()
                    print(work.report("faust"), flush=True)
                    finish(scratch)
        async for values in stream.take(BATCH, within=1.0):
            await work.batch(list(values))
            if work.done >= total:
                print(work.report("faust"), flush=True)
                finish(scratch)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


def finish(scratch: Path) -> None:
    """Leave faust at once (its shutdown is slow and irrelevant here), tidily."""
    shutil.rmtree(scratch, ignore_errors=True)
    atexit._run_exitfuncs()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="aiokafka loader vs faust agent throughput")
    parser.add_argument("mode", choices=("produce", "aiokafka", "faust"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--prefix", help="topic prefix printed by `produce`")
    parser.add_argument("--work", choices=("load", "decode", "count"), default="load")
    args = parser.parse_args()
    if args.mode == "produce":
        asyncio.run(produce(args.events))
    elif args.mode == "aiokafka":
        asyncio.run(run_aiokafka(args.prefix, args.events, args.work))
    else:
        run_faust(args.prefix, args.events, args.work)


if __name__ == "__main__":
    main()
