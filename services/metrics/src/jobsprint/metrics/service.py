"""Bootstrap: builds the adapters from settings and runs the loader and the HTTP API in one
asyncio process. The first to fail stops the other; the process exits non-zero then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from jobsprint.metrics.api import ApiContext, create_app
from jobsprint.metrics.clickhouse import AsyncClickHouse, ClickHouse, open_clickhouse
from jobsprint.metrics.consumer import EventsLoader
from jobsprint.metrics.schema import create_schema
from jobsprint.metrics.settings import MetricsSettings
from jobsprint.metrics.store import LoaderStore
from jobsprint.runtime.heap import settle_heap
from jobsprint.runtime.kafka import ensure_topics, make_consumer, make_producer

log = logging.getLogger(__name__)

CLIENT_ID = "jobsprint-metrics"
# Metrics are not on any request's path: let the broker gather up to FETCH_MIN_BYTES (or
# wait FETCH_MAX_WAIT_MS) per fetch instead of answering every transaction the executors
# commit. Under load that is ten fetches a second instead of hundreds.
FETCH_MIN_BYTES = 256 * 1024
FETCH_MAX_WAIT_MS = 100


def analyst_settings(settings: MetricsSettings) -> dict[str, Any]:
    """Session settings of analysts' SQL: bounded, and `readonly` last (it freezes the rest)."""
    return {
        "max_execution_time": max(1, round(settings.metrics_sql_timeout_s)),
        "max_result_rows": settings.metrics_sql_max_rows + 1,
        "result_overflow_mode": "break",
        "readonly": 1,
    }


def open_engine(
    settings: MetricsSettings,
    extra: dict[str, Any] | None = None,
    *,
    use_database: bool = True,
) -> ClickHouse:
    """A session on the configured engine; its current database is the service's (which
    must exist: `create_schema` first) unless `use_database` is false."""
    return open_clickhouse(
        clickhouse_url=settings.clickhouse_url,
        chdb_path=settings.chdb_path,
        database=settings.clickhouse_database if use_database else None,
        settings=extra,
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"metrics: cannot listen on {host}:{port}: {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(settings: MetricsSettings) -> int:
    """Run until SIGTERM/SIGINT (exit code 0) or until the loader or server fails (1)."""
    database = settings.clickhouse_database
    loader_ch = AsyncClickHouse(
        await asyncio.to_thread(lambda: open_engine(settings, use_database=False))
    )
    await asyncio.to_thread(create_schema, loader_ch.sync, database)
    query_ch = AsyncClickHouse(await asyncio.to_thread(open_engine, settings))
    analyst_ch = AsyncClickHouse(
        await asyncio.to_thread(open_engine, settings, analyst_settings(settings))
    )
    sock = bind(settings.metrics_http_host, settings.metrics_http_port)

    await ensure_topics(settings.kafka_bootstrap, settings.topics, settings.partitions)
    producer = make_producer(settings.kafka_bootstrap, client_id=CLIENT_ID)
    consumer = make_consumer(
        settings.kafka_bootstrap,
        group_id=settings.metrics_group,
        client_id=CLIENT_ID,
        max_poll_records=settings.metrics_batch_max_rows,
        fetch_min_bytes=FETCH_MIN_BYTES,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await producer.start()
    await consumer.start()
    loader = EventsLoader(
        consumer=consumer,
        producer=producer,
        store=LoaderStore(loader_ch, database),
        topics=settings.topics,
        bootstrap=settings.kafka_bootstrap,
        batch_max_rows=settings.metrics_batch_max_rows,
        batch_max_seconds=settings.metrics_batch_max_seconds,
    )

    async def ready() -> str | None:
        if not loader.running:
            return "the Kafka loader is not running"
        try:
            await query_ch.query("SELECT 1")
        except Exception as exc:
            return f"ClickHouse does not answer: {exc}"
        return None

    app = create_app(
        ApiContext(
            metrics=query_ch,
            database=database,
            ready=ready,
            analyst=analyst_ch,
            sql_token=settings.metrics_sql_token,
            sql_max_rows=settings.metrics_sql_max_rows,
        )
    )
    server = _Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop="none")
    )

    requested = asyncio.Event()

    def stop() -> None:
        loader.stop()
        server.should_exit = True

    def on_signal() -> None:
        requested.set()
        stop()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    settle_heap()
    loader_task = asyncio.create_task(loader.run(), name="loader")
    server_task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    log.info(
        "metrics serving on http://%s:%d, loading %s into %s",
        settings.metrics_http_host,
        sock.getsockname()[1],
        settings.topics.events,
        "a ClickHouse server" if settings.clickhouse_url else f"chDB at {settings.chdb_path}",
    )
    exit_code = 0
    try:
        await asyncio.wait({loader_task, server_task}, return_when=asyncio.FIRST_COMPLETED)
        if not requested.is_set():
            exit_code = 1  # one of them ended on its own
        stop()
        for task in (loader_task, server_task):
            try:
                await task
            except Exception:
                log.exception("%s failed", task.get_name())
                exit_code = 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await consumer.stop()
        await producer.stop()
        for ch in (analyst_ch, query_ch, loader_ch):
            ch.close()
    return exit_code
