"""Helpers for executor tests: send commands, run executors, read the events back."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobsprint.events import (
    CancelExecution,
    Envelope,
    ExecuteWorkflow,
    Payload,
    Topics,
    decode,
    encode,
    make,
    utcnow,
)
from jobsprint.events.ids import new_execution_id
from jobsprint.executor.settings import ExecutorSettings
from jobsprint.executor.worker import Executor
from jobsprint.runtime.kafka import make_consumer, make_producer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workflow(*steps: dict[str, Any], output: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "test flow", "trigger": {"type": "manual"}, "steps": list(steps)}
    if output is not None:
        doc["output"] = output
    return doc


class Commands:
    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.producer = make_producer(bootstrap, client_id="test-commands")

    async def execute(
        self,
        definition: dict[str, Any],
        input: Any = None,
        timeout_s: float = 60,
        execution_id: str | None = None,
    ) -> str:
        execution_id = execution_id or new_execution_id()
        await self.send(
            execution_id,
            ExecuteWorkflow(
                workflow_id="wf_test",
                workflow_name=definition["name"],
                workflow_version=1,
                workflow=definition,
                input=input,
                timeout_s=timeout_s,
                requested_at=utcnow(),
            ),
        )
        return execution_id

    async def cancel(self, execution_id: str) -> None:
        await self.send(execution_id, CancelExecution(requested_at=utcnow()))

    async def send(self, execution_id: str, payload: Payload) -> None:
        envelope = make(
            payload, execution_id=execution_id, workspace_id="ws_test", correlation_id=execution_id
        )
        await self.producer.send_and_wait(self.topics.commands, encode(envelope), key=envelope.key)


@pytest.fixture
async def commands(bootstrap: str, topics: Topics) -> AsyncIterator[Commands]:
    made = Commands(bootstrap, topics)
    await made.producer.start()
    yield made
    await made.producer.stop()


def executor_settings(bootstrap: str, topics: Topics, **extra: Any) -> ExecutorSettings:
    return ExecutorSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=topics.prefix,
        executor_http_port=free_port(),
        http_allow_list="127.0.0.1,localhost",
        **extra,
    )


@pytest.fixture
async def executor(bootstrap: str, topics: Topics) -> AsyncIterator[Executor]:
    worker = Executor(executor_settings(bootstrap, topics))
    task = asyncio.create_task(worker.run())
    yield worker
    worker.stopping.set()
    await asyncio.wait_for(task, 60)


class EventLog:
    """Everything committed to the events topic, grouped by execution."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.consumer = make_consumer(
            bootstrap, topics.events, group_id=None, client_id="test-read"
        )
        self.by_execution: dict[str, list[Envelope[Payload]]] = defaultdict(list)

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def poll(self) -> None:
        batch = await self.consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for record in records:
                envelope = decode(record.value)
                self.by_execution[envelope.execution_id].append(envelope)

    def types(self, execution_id: str) -> list[str]:
        return [e.type.split(".")[1] for e in self.by_execution[execution_id]]

    def terminal(self, execution_id: str) -> str | None:
        for envelope in self.by_execution[execution_id]:
            name = envelope.type.split(".")[1]
            if name in ("succeeded", "failed", "cancelled"):
                return name
        return None

    async def wait_terminal(self, execution_ids: list[str], timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while not all(self.terminal(e) for e in execution_ids):
                await self.poll()

    async def wait_for(self, execution_id: str, event: str, timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while event not in self.types(execution_id):
                await self.poll()


@pytest.fixture
async def events(bootstrap: str, topics: Topics) -> AsyncIterator[EventLog]:
    log = EventLog(bootstrap, topics)
    await log.start()
    yield log
    await log.stop()


def spawn_executor(bootstrap: str, topics: Topics) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOBSPRINT_KAFKA_BOOTSTRAP": bootstrap,
        "JOBSPRINT_TOPIC_PREFIX": topics.prefix,
        "JOBSPRINT_EXECUTOR_HTTP_PORT": str(free_port()),
        "JOBSPRINT_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jobsprint.executor"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
