"""Waiting for executions to change, without polling hard: ONE dedicated connection
LISTENs on `jobsprint_executions` (the projector notifies `<execution_id> <status>` after
committing a terminal status, `<execution_id> deleted` after a deletion) and wakes the
requests waiting on that execution. A waiter re-checks the table right after registering,
so a notification that came before it registered is never lost, and re-checks every
`poll_s` anyway, so a lost connection only slows it down.

The same connection LISTENs on `jobsprint_workflows` for the workflow cache
(workflow_cache.py), which serves only while it listens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from jobsprint.gateway import workflow_cache
from jobsprint.gateway.workflow_cache import WorkflowCache

log = logging.getLogger(__name__)

CHANNEL = "jobsprint_executions"
T = TypeVar("T")


class ExecutionWaiters:
    def __init__(
        self,
        conninfo: str,
        *,
        poll_s: float = 1.0,
        reconnect_s: float = 1.0,
        workflows: WorkflowCache | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.workflows = workflows
        self.poll_s = poll_s
        self.reconnect_s = reconnect_s
        self._waiting: defaultdict[str, set[asyncio.Future[str]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="execution-notifications")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self.workflows is not None:
                        await conn.execute(f"LISTEN {workflow_cache.CHANNEL}")
                        self.workflows.listening()
                    self.listening.set()
                    self._wake_all("listening")  # whatever happened while we were away
                    async for notify in conn.notifies():
                        if notify.channel == CHANNEL:
                            self._dispatch(notify.payload)
                        elif self.workflows is not None:
                            self.workflows.notified(notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN %s lost (%s); reconnecting", CHANNEL, exc)
            finally:
                if self.workflows is not None:
                    self.workflows.deaf()
            self.listening.clear()
            await asyncio.sleep(self.reconnect_s)

    def _dispatch(self, payload: str) -> None:
        execution_id, _, status = payload.partition(" ")
        for future in self._waiting.get(execution_id, ()):
            if not future.done():
                future.set_result(status)

    def _wake_all(self, why: str) -> None:
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(why)

    def expect(self, execution_id: str) -> asyncio.Future[str]:
        """Register for `execution_id`'s notifications before causing them (before its
        command is sent): a `wait_for(..., expected=)` that follows needs no first check,
        as nothing can have finished before. `forget` it if the wait never comes."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[execution_id].add(future)
        return future

    def forget(self, execution_id: str, future: asyncio.Future[str]) -> None:
        waiting = self._waiting.get(execution_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[execution_id]

    async def wait_for(
        self,
        execution_id: str,
        check: Callable[[], Awaitable[T | None]],
        timeout_s: float,
        *,
        expected: asyncio.Future[str] | None = None,
    ) -> T | None:
        """Run `check` until it returns something (then return it), re-running it on every
        notification about `execution_id` and at least every `poll_s`; None when
        `timeout_s` passes first. With `expected` (from `expect`, registered before the
        execution could change) the first check waits for a notification or `poll_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = expected
        while True:
            future = self.expect(execution_id) if pending is None else pending
            try:
                if pending is None:  # after registering: no wake-up can slip through
                    result = await check()
                    if result is not None:
                        return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await asyncio.wait({future}, timeout=min(self.poll_s, remaining))
            finally:
                self.forget(execution_id, future)
                pending = None
