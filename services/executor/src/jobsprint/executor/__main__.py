"""`jobsprint-executor`: run one executor worker process."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from jobsprint.executor.settings import ExecutorSettings
from jobsprint.executor.worker import Executor
from jobsprint.runtime.heap import settle_heap
from jobsprint.runtime.kafka import ensure_topics
from jobsprint.runtime.logs import setup_logging
from jobsprint.runtime.ops import serve_ops
from jobsprint.runtime.settings import load_settings

log = logging.getLogger("jobsprint.executor")


async def serve(settings: ExecutorSettings) -> None:
    await ensure_topics(settings.kafka_bootstrap, settings.topics, settings.partitions)
    executor = Executor(settings)

    async def ready() -> str | None:
        consumer = executor.consumer
        if not executor.ready or consumer is None:
            return "not consuming yet"
        try:
            await asyncio.wait_for(consumer.topics(), 2)  # a metadata round trip to Kafka
        except Exception as exc:
            return f"kafka: {type(exc).__name__}"
        # a member without partitions is ready too: more replicas than partitions is legal
        return None

    ops = await serve_ops(settings.executor_http_host, settings.executor_http_port, ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, executor.stopping.set)
    log.info("executor starting", extra={"partition": None})
    settle_heap()
    try:
        await executor.run()
    finally:
        ops.close()
    log.info("executor stopped")


def main() -> None:
    settings = load_settings(ExecutorSettings)
    setup_logging("executor", settings.log_level)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
