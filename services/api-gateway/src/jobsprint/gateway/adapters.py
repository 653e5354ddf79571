"""The gateway's adapters (Postgres pool, Kafka producer, LISTEN task, metrics client),
built from settings by the app's lifespan, or handed in by tests."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from jobsprint.gateway.commands import CommandBus
from jobsprint.gateway.repository import Repository
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.waiters import ExecutionWaiters
from jobsprint.runtime.postgres import make_pool


@dataclass
class Adapters:
    pool: AsyncConnectionPool[Any]
    repository: Repository
    commands: CommandBus
    waiters: ExecutionWaiters
    metrics_http: httpx.AsyncClient

    async def start(self) -> None:
        await self.pool.open(wait=True, timeout=10)
        await self.commands.start()
        await self.waiters.start()

    async def close(self) -> None:
        await self.waiters.close()
        await self.commands.close()
        with contextlib.suppress(Exception):
            await self.metrics_http.aclose()
        await self.pool.close()


def build_adapters(settings: GatewaySettings) -> Adapters:
    pool = make_pool(settings.database_url, max_size=settings.pg_pool_max, name="gateway")
    return Adapters(
        pool=pool,
        repository=Repository(pool),
        commands=CommandBus(
            settings.kafka_bootstrap, settings.topics, partitions=settings.partitions
        ),
        waiters=ExecutionWaiters(settings.database_url),
        metrics_http=httpx.AsyncClient(
            base_url=settings.metrics_url, timeout=httpx.Timeout(10.0, connect=2.0)
        ),
    )
