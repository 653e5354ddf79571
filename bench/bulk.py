"""Bulk data made the way production makes it: generated event streams produced to the events
topic of a separate topic prefix, then folded into a separate database by the REAL projector
process (`python -m jobsprint.projector`), never by writing the tables directly.

Reuse: a state file under bench/out/ records what was produced; a later run that finds the
topic and the read model complete skips straight to measuring.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from bench.eventgen import (
    StreamMaker,
    WorkflowPicker,
    creation_times,
    make_workflows,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
HOUR_MS = 3_600_000


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BulkTarget:
    """One bulk data set: `executions` executions of one workspace, in topic prefix
    `prefix`, folded into database `database` (schema public)."""

    prefix: str
    database: str
    workspace: str
    executions: int
    days: float = 30.0
    workflows: int = 20
    seed: int = 11


def with_database(url: str, database: str) -> str:
    """`url` with its database name replaced."""
    head, _, tail = url.rpartition("/")
    query = ""
    if "?" in tail:
        query = "?" + tail.split("?", 1)[1]
    return f"{head}/{database}{query}"


def ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')
            say(f"created database {name}")


def create_token(url: str, workspace: str) -> tuple[str, str]:
    """(token, workspace id) of a new token of `workspace` (created when new) in the
    database at `url`, made with the gateway's admin CLI."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsprint.gateway.cli",
            "--database-url",
            url,
            "admin",
            "token",
            "create",
            "--workspace",
            workspace,
            "--name",
            "bench",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    match = re.search(r"in workspace (\S+)", done.stderr)
    if not match:
        raise RuntimeError(f"unexpected output of the token CLI: {done.stderr!r}")
    return done.stdout.strip(), match.group(1)


async def topic_offsets(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(beginning, end) offsets by partition; empty when the topic does not exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return {}, {}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return {tp.partition: o for tp, o in begin.items()}, {
            tp.partition: o for tp, o in end.items()
        }
    finally:
        await consumer.stop()


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), as every Jobsprint producer uses."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def produce(
    bootstrap: str,
    topic: str,
    partitions: int,
    streams: Iterator[tuple[str, list[bytes]]],
    *,
    compression_type: str | None = None,
) -> tuple[int, float]:
    """Produce every stream's events, keyed by execution id, in order within each execution.
    Batches are built by hand per partition (no per-message future) to keep up ~100k/s;
    `compression_type` compresses each batch (a codec aiokafka supports here)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=50,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        compression_type=compression_type,
        client_id="jobsprint-bench-bulk",
    )
    await producer.start()
    started = time.perf_counter()
    sent = 0
    in_flight: set[asyncio.Future[Any]] = set()
    builders = [producer.create_batch() for _ in range(partitions)]

    async def ship(partition: int) -> None:
        future = await producer.send_batch(builders[partition], topic, partition=partition)
        in_flight.add(future)
        future.add_done_callback(in_flight.discard)
        builders[partition] = producer.create_batch()
        while len(in_flight) > 4 * partitions:
            await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)

    try:
        for execution_id, events in streams:
            key = execution_id.encode()
            partition = partition_of(key, partitions)
            for value in events:
                if builders[partition].append(key=key, value=value, timestamp=None) is None:
                    await ship(partition)
                    builders[partition].append(key=key, value=value, timestamp=None)
                sent += 1
        for partition in range(partitions):
            if builders[partition].record_count():
                await ship(partition)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        await producer.stop()
    return sent, time.perf_counter() - started


def streams_for(
    target: BulkTarget, workspace_id: str, end_ms: int
) -> Iterator[tuple[str, list[bytes]]]:
    rng = random.Random(target.seed)
    workflows = make_workflows(target.workflows, rng, end_ms - int(target.days * 86_400_000) - 1)
    pick = WorkflowPicker(workflows, rng)
    maker = StreamMaker(workspace_id, seed=target.seed + 1)
    recent_from = end_ms - HOUR_MS
    for created in creation_times(target.executions, end_ms, target.days, rng):
        yield maker.execution(pick(), created, recent=created >= recent_from)


def state_file(target: BulkTarget) -> Path:
    return OUT / f"bulk-{target.prefix}.json"


async def projector_positions(url: str, topic: str) -> dict[int, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            cur = await conn.execute(
                "SELECT partition, next_offset FROM projector_checkpoints WHERE topic = %s",
                (topic,),
            )
        except psycopg.errors.UndefinedTable:
            return {}
        return {p: o for p, o in await cur.fetchall()}


async def count_executions(url: str, workspace_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            cur = await conn.execute(
                "SELECT count(*) FROM executions WHERE workspace_id = %s", (workspace_id,)
            )
        except psycopg.errors.UndefinedTable:
            return 0
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def run_projector_until_caught_up(
    bootstrap: str, url: str, prefix: str, timeout_s: float
) -> dict[str, Any]:
    """Start the real projector on `prefix` / `url`, wait until its checkpoints reach the
    end of the events topic, stop it. Returns its catch-up rate."""
    topic = f"{prefix}.events"
    _, end = await topic_offsets(bootstrap, topic)
    before = await projector_positions(url, topic)
    todo = sum(max(0, end[p] - before.get(p, 0)) for p in end)
    if todo == 0:
        return {"events": 0, "seconds": 0.0, "events_per_s": None}
    OUT.mkdir(parents=True, exist_ok=True)
    log = open(OUT / f"projector-{prefix}.log", "ab")  # noqa: SIM115 - handed to the child
    env = {
        **os.environ,
        "JOBSPRINT_KAFKA_BOOTSTRAP": bootstrap,
        "JOBSPRINT_DATABASE_URL": url,
        "JOBSPRINT_TOPIC_PREFIX": prefix,
        "JOBSPRINT_PROJECTOR_HTTP_PORT": "0",
        "JOBSPRINT_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobsprint.projector"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    say(f"projector ({prefix}) folding {todo:,} events into {url.rsplit('/', 1)[-1]} …")
    started = time.perf_counter()
    last_report = started
    try:
        while True:
            await asyncio.sleep(2)
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the bulk projector exited with {proc.returncode}; see {log.name}"
                )
            now_pos = await projector_positions(url, topic)
            left = sum(max(0, end[p] - now_pos.get(p, 0)) for p in end)
            now = time.perf_counter()
            if now - last_report > 30:
                last_report = now
                done = todo - left
                say(
                    f"  … {done:,}/{todo:,} events ({done / (now - started):,.0f}/s),"
                    f" load {os.getloadavg()[0]:.1f}"
                )
            if left == 0:
                break
            if now - started > timeout_s:
                raise TimeoutError(f"the bulk projector did not catch up in {timeout_s:.0f} s")
        seconds = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"events": todo, "seconds": round(seconds, 1), "events_per_s": round(todo / seconds, 1)}


async def vacuum(url: str) -> None:
    """What autovacuum would do soon after a bulk load (visibility map, statistics), done
    now so it does not run in the middle of a measurement."""
    say("VACUUM (ANALYZE) of the bulk read model …")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("executions", "execution_steps", "execution_logs"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")


async def ensure_bulk(
    target: BulkTarget, bootstrap: str, base_url: str, *, fold: bool = True, timeout_s: float = 3600
) -> dict[str, Any]:
    """Make sure the topic holds `target.executions` generated executions and (when `fold`)
    that the read model of `target.database` holds them. Returns what was found or done."""
    from jobsprint.events import Topics
    from jobsprint.runtime.kafka import ensure_topics

    admin_url = with_database(base_url, "postgres")
    url = with_database(base_url, target.database)
    ensure_database(admin_url, target.database)
    token, workspace_id = create_token(url, target.workspace)
    partitions = int(os.environ.get("JOBSPRINT_PARTITIONS", "6"))
    await ensure_topics(bootstrap, Topics(target.prefix), partitions)
    topic = f"{target.prefix}.events"
    info: dict[str, Any] = {
        "prefix": target.prefix,
        "database": target.database,
        "workspace_id": workspace_id,
        "token": token,
        "url": url,
    }
    state = state_file(target)
    saved = orjson.loads(state.read_bytes()) if state.exists() else {}
    begin, end = await topic_offsets(bootstrap, topic)
    in_topic = sum(end.values()) - sum(begin.values())
    if (
        saved.get("workspace_id") == workspace_id
        and saved.get("executions", 0) >= target.executions
        and in_topic >= saved.get("events", 0) > 0
    ):
        say(f"{topic}: reusing {saved['executions']:,} executions ({saved['events']:,} events)")
        info.update(saved)
        info["produced"] = None
    else:
        end_ms = int(time.time() * 1000)
        say(f"{topic}: producing {target.executions:,} executions over {target.days:g} days …")
        events, seconds = await produce(
            bootstrap, topic, partitions, streams_for(target, workspace_id, end_ms)
        )
        say(f"{topic}: produced {events:,} events in {seconds:.0f} s ({events / seconds:,.0f}/s)")
        saved = {
            "workspace_id": workspace_id,
            "executions": target.executions,
            "events": events,
            "end_ms": end_ms,
            "workflows": [
                w.id
                for w in make_workflows(
                    target.workflows,
                    random.Random(target.seed),
                    end_ms - int(target.days * 86_400_000) - 1,
                )
            ],
        }
        OUT.mkdir(parents=True, exist_ok=True)
        state.write_bytes(orjson.dumps(saved, option=orjson.OPT_INDENT_2))
        info.update(saved)
        info["produced"] = {"events": events, "seconds": round(seconds, 1)}
    if fold:
        info["catch_up"] = await run_projector_until_caught_up(
            bootstrap, url, target.prefix, timeout_s
        )
        if info["catch_up"]["events"]:
            await vacuum(url)
        info["read_model_executions"] = await count_executions(url, workspace_id)
    return info
