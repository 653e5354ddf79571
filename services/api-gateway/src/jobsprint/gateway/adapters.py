"""The gateway's adapters (Postgres pool, Kafka producer, LISTEN task, metrics client,
workflow cache), built from settings by the app's lifespan, or handed in by tests."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from jobsprint.gateway.commands import CommandBus
from jobsprint.gateway.repository import ABANDONED_AFTER, IDEMPOTENCY_WINDOW, Repository
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.upkeep import run_upkeep
from jobsprint.gateway.waiters import ExecutionWaiters
from jobsprint.gateway.workflow_cache import Row, WorkflowCache
from jobsprint.runtime.postgres import make_pool


@dataclass
class Adapters:
    pool: AsyncConnectionPool[Any]
    repository: Repository
    commands: CommandBus
    waiters: ExecutionWaiters
    metrics_http: httpx.AsyncClient
    workflows: WorkflowCache = field(default_factory=WorkflowCache)
    upkeep_interval_s: float = 1.0
    _upkeep: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _pool_check: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def database_failed(self) -> None:
        """A statement failed because the database went away: check every idle pooled
        connection now and drop the broken ones, instead of letting each stale connection
        fail one more request after Postgres returns."""
        if self._pool_check is None or self._pool_check.done():
            self._pool_check = asyncio.create_task(self.pool.check())

    async def current_workflow(self, workspace_id: str, workflow_id: str) -> Row | None:
        """The workflow with its current definition (cached; see workflow_cache.py)."""
        return await self.workflows.get(
            workspace_id,
            workflow_id,
            lambda: self.repository.workflow(workspace_id, workflow_id),
        )

    async def start(self) -> None:
        await self.pool.open(wait=True, timeout=10)
        await self.commands.start()
        await self.waiters.start()
        self._upkeep = asyncio.create_task(
            run_upkeep(
                self.pool,
                interval_s=self.upkeep_interval_s,
                abandoned_after=ABANDONED_AFTER,
                keep_for=IDEMPOTENCY_WINDOW,
            )
        )

    async def close(self) -> None:
        for task in (self._upkeep, self._pool_check):
            if task is not None:
                task.cancel()
        await self.waiters.close()
        await self.commands.close()
        with contextlib.suppress(Exception):
            await self.metrics_http.aclose()
        await self.pool.close()


def build_adapters(settings: GatewaySettings) -> Adapters:
    pool = make_pool(settings.database_url, max_size=settings.pg_pool_max, name="gateway")
    workflows = WorkflowCache()
    return Adapters(
        pool=pool,
        repository=Repository(pool),
        commands=CommandBus(
            settings.kafka_bootstrap,
            settings.topics,
            partitions=settings.partitions,
            linger_ms=settings.command_linger_ms,
        ),
        waiters=ExecutionWaiters(settings.database_url, workflows=workflows),
        workflows=workflows,
        metrics_http=httpx.AsyncClient(
            base_url=settings.metrics_url, timeout=httpx.Timeout(10.0, connect=2.0)
        ),
        upkeep_interval_s=settings.request_upkeep_interval_s,
    )
