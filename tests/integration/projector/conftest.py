"""Helpers for the projector's integration tests: event histories, a real producer, the
projector run in-process on the test's topics and database, and waiting for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from jobsprint.events import (
    Envelope,
    ErrorInfo,
    ExecutionCancelled,
    ExecutionDeleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    LogRecorded,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    Topics,
    encode,
    make,
)
from jobsprint.events.ids import new_execution_id
from jobsprint.projector.service import serve
from jobsprint.projector.settings import ProjectorSettings
from jobsprint.runtime.kafka import make_producer

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


class History:
    """The events of one execution, numbered from seq 1."""

    def __init__(self, execution_id: str | None = None, workspace_id: str = "ws_1") -> None:
        self.execution_id = execution_id or new_execution_id()
        self.workspace_id = workspace_id
        self.events: list[Envelope[Payload]] = []

    def add(self, payload: Payload) -> History:
        seq = len(self.events) + 1
        self.events.append(
            make(
                payload,
                execution_id=self.execution_id,
                workspace_id=self.workspace_id,
                correlation_id=self.execution_id,
                seq=seq,
                time=T0 + timedelta(milliseconds=250 * seq),
            )
        )
        return self

    def requested(self, workflow_id: str = "wf_1", **fields: Any) -> History:
        return self.add(
            ExecutionRequested(
                workflow_id=workflow_id,
                workflow_name=f"Workflow {workflow_id}",
                workflow_version=1,
                **({"input": {"email": {"from": "user@example.com"}}} | fields),
            )
        )

    def started(self) -> History:
        return self.add(ExecutionStarted())

    def step(self, step_id: str, position: int, attempt: int = 1) -> History:
        return self.add(
            StepStarted(
                step_id=step_id,
                step_name=f"Step {step_id}",
                step_type="transform",
                position=position,
                attempt=attempt,
                input={"position": position},
            )
        )

    def completed(self, step_id: str, output: Any, attempt: int = 1) -> History:
        return self.add(
            StepCompleted(step_id=step_id, attempt=attempt, output=output, duration_ms=250)
        )

    def step_failed(self, step_id: str, attempt: int, will_retry: bool) -> History:
        error = ErrorInfo(code="http_status", message="HTTP 503", step_id=step_id)
        return self.add(
            StepFailed(
                step_id=step_id,
                attempt=attempt,
                error=error,
                will_retry=will_retry,
                duration_ms=120,
            )
        )

    def log(self, message: str, step_id: str | None = None, **data: Any) -> History:
        return self.add(LogRecorded(message=message, step_id=step_id, data=data or None))

    def succeeded(self, output: Any) -> History:
        return self.add(ExecutionSucceeded(output=output, duration_ms=250 * len(self.events)))

    def failed(self, step_id: str) -> History:
        error = ErrorInfo(code="http_status", message="HTTP 503", step_id=step_id)
        return self.add(ExecutionFailed(error=error, duration_ms=250 * len(self.events)))

    def cancelled(self, step_id: str | None) -> History:
        return self.add(ExecutionCancelled(step_id=step_id, duration_ms=250 * len(self.events)))

    def deleted(self) -> History:
        return self.add(ExecutionDeleted())


def workload(executions: int) -> list[Envelope[Payload]]:
    """About 10 events per execution — successes, retried failures, cancellations and
    deletions — interleaved the way concurrent runs interleave on the topic."""
    histories = []
    for n in range(executions):
        h = History(workspace_id=f"ws_{n % 3}").requested(f"wf_{n % 7}", input={"n": n})
        h.started().step("fetch", 0).log("fetching", "fetch", n=n).completed("fetch", {"n": n})
        h.step("send", 1)
        kind = n % 10
        if kind < 6:
            h.completed("send", {"sent": True}).succeeded({"n": n, "sent": True})
        elif kind < 8:
            h.step_failed("send", 1, will_retry=True).step("send", 1, attempt=2)
            h.step_failed("send", 2, will_retry=False).failed("send")
        elif kind < 9:
            h.log("cancelling", "send").cancelled("send")
        else:
            h.completed("send", {"sent": False}).succeeded(None).deleted()
        histories.append(h.events)
    interleaved = []
    for i in range(max(len(h) for h in histories)):
        interleaved += [h[i] for h in histories if i < len(h)]
    return interleaved


class Publisher:
    """A real producer on the test's events topic; remembers the last offset it wrote to
    each partition, so a test can wait until the projector has applied everything."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics
        self.last_offsets: dict[int, int] = {}

    async def send(self, events: list[Envelope[Payload]]) -> None:
        futures = [
            await self.producer.send(self.topics.events, encode(e), key=e.key) for e in events
        ]
        for meta in await asyncio.gather(*futures):
            self._note(meta.partition, meta.offset)

    async def send_raw(self, value: bytes, key: bytes, partition: int) -> int:
        meta = await self.producer.send_and_wait(
            self.topics.events, value, key=key, partition=partition
        )
        self._note(meta.partition, meta.offset)
        return int(meta.offset)

    async def partition_of(self, event: Envelope[Payload]) -> int:
        meta = await self.producer.send_and_wait(self.topics.events, encode(event), key=event.key)
        self._note(meta.partition, meta.offset)
        return int(meta.partition)

    def _note(self, partition: int, offset: int) -> None:
        self.last_offsets[partition] = max(offset, self.last_offsets.get(partition, -1))


@pytest.fixture
def history() -> type[History]:
    return History


@pytest.fixture
def make_workload() -> Callable[[int], list[Envelope[Payload]]]:
    return workload


@pytest.fixture
async def publisher(bootstrap: str, topics: Topics) -> AsyncIterator[Publisher]:
    producer = make_producer(bootstrap, client_id="test-publisher", linger_ms=5)
    await producer.start()
    yield Publisher(producer, topics)
    await producer.stop()


@pytest.fixture
def settings(bootstrap: str, topics: Topics, database: str) -> ProjectorSettings:
    return ProjectorSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=topics.prefix,
        database_url=database,
        partitions=3,
        projector_http_port=0,
    )


class RunningProjector:
    """The live projector run in-process (`serve`) on a test's settings."""

    def __init__(self, settings: ProjectorSettings) -> None:
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(serve(settings, self._stop))

    async def stop(self) -> None:
        """What SIGTERM does: finish the batch, commit, leave the group."""
        self._stop.set()
        await asyncio.wait_for(self.task, 30)


RunProjector = Callable[[ProjectorSettings], AbstractAsyncContextManager[RunningProjector]]


@pytest.fixture
def run_projector() -> RunProjector:
    """`async with run_projector(settings) as projector:` runs the live projector and stops
    it on the way out (if the test has not already)."""

    @asynccontextmanager
    async def running(settings: ProjectorSettings) -> AsyncIterator[RunningProjector]:
        projector = RunningProjector(settings)
        try:
            yield projector
        finally:
            await projector.stop()

    return running


async def checkpoints(database_url: str, topic: str, schema: str = "public") -> dict[int, int]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        try:
            cur = await conn.execute(
                f"SELECT partition, next_offset FROM {schema}.projector_checkpoints"
                " WHERE topic = %s",
                (topic,),
            )
        except psycopg.errors.UndefinedTable:
            return {}
        return {p: o for p, o in await cur.fetchall()}


async def wait_caught_up(
    database_url: str,
    topic: str,
    last_offsets: dict[int, int],
    *,
    task: asyncio.Task[None] | None = None,
    timeout_s: float = 30.0,
    schema: str = "public",
) -> None:
    """Until the stored checkpoints pass every offset written."""
    async with asyncio.timeout(timeout_s):
        while True:
            if task is not None and task.done():
                task.result()  # raises what stopped the projector
                raise AssertionError("the projector stopped")
            stored = await checkpoints(database_url, topic, schema)
            if all(stored.get(p, 0) > o for p, o in last_offsets.items()):
                return
            await asyncio.sleep(0.05)


@pytest.fixture
def caught_up() -> Callable[..., Any]:
    return wait_caught_up


@pytest.fixture
def stored_checkpoints() -> Callable[..., Any]:
    return checkpoints
