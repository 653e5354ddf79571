"""Helpers of the gateway integration tests: the app in process, callers, a stand-in
projector writing read-model rows, a commands-topic reader."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from jobsprint.events import Envelope, Topics, decode
from jobsprint.events.ids import new_id
from jobsprint.gateway.app import create_app
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.runtime.kafka import make_consumer

BASE = "http://gateway.test"

WORKFLOW = {
    "name": "Email Auto-Responder",
    "description": "answers support mail",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "node_1",
            "name": "Shape",
            "type": "transform",
            "params": {"output": {"to": "{{ input.email.from }}"}},
        },
        {"id": "node_2", "name": "Say", "type": "log", "params": {"message": "hello"}},
        {"id": "node_3", "name": "Finish", "type": "transform", "params": {"output": {"ok": True}}},
    ],
    "output": {"to": "{{ steps.node_1.output.to }}"},
}


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running(
    settings: GatewaySettings, *, wait_for_kafka: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if wait_for_kafka:
            for _ in range(200):
                if app.state.gateway.adapters.commands.connected:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the gateway's producer never connected")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60) as client:
            yield client, app


@dataclass
class Caller:
    """A workspace and a token of it, as the CLI creates them."""

    workspace_id: str
    token_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def create_workflow(
    client: httpx.AsyncClient, who: Caller, definition: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer = await client.post("/v1/workflows", json=definition or WORKFLOW, headers=who.headers)
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


async def consume_commands(
    bootstrap: str, topics: Topics, *, expect: int, settle_s: float = 1.5, timeout_s: float = 20
) -> list[Envelope[Any]]:
    """Every command on the topic: waits for `expect` of them, then `settle_s` more so that
    an extra one would be seen too."""
    consumer = make_consumer(bootstrap, topics.commands, group_id=None, client_id="test-reader")
    await consumer.start()
    found: list[Envelope[Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        settle_until: float | None = None
        while True:
            now = loop.time()
            if settle_until is None and len(found) >= expect:
                settle_until = now + settle_s
            if (settle_until is not None and now >= settle_until) or now >= deadline:
                break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    envelope = decode(record.value)
                    assert record.key == envelope.execution_id.encode()
                    found.append(envelope)
    finally:
        await consumer.stop()
    return found


class ReadModel:
    """Writes rows the way the projector would (the gateway never writes these tables)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def execute(self, query: str, params: Any = None) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(query, params)

    async def add_execution(
        self,
        workspace_id: str,
        *,
        execution_id: str | None = None,
        created_at: datetime | None = None,
        workflow_id: str = "wf_01jgz0000000000000000000",
        workflow_name: str = "Email Auto-Responder",
        workflow_version: int = 1,
        status: str = "success",
        triggered_by: str = "api",
        input: Any = None,
        output: Any = None,
        error: Any = None,
        original_execution_id: str | None = None,
        duration_ms: int | None = 1234,
        last_seq: int = 7,
    ) -> str:
        created = created_at or datetime.now(UTC).replace(microsecond=0)
        execution_id = execution_id or new_id("exec", created)
        terminal = status in ("success", "error", "cancelled")
        finished = created + timedelta(milliseconds=duration_ms or 0) if terminal else None
        await self.execute(
            "INSERT INTO executions (id, workspace_id, workflow_id, workflow_name,"
            " workflow_version, status, triggered_by, input, output, error,"
            " original_execution_id, timeout_s, created_at, started_at, finished_at,"
            " cancelled_at, duration_ms, last_seq)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,300,%s,%s,%s,%s,%s,%s)",
            (
                execution_id,
                workspace_id,
                workflow_id,
                workflow_name,
                workflow_version,
                status,
                triggered_by,
                Jsonb(input) if input is not None else None,
                Jsonb(output) if output is not None else None,
                Jsonb(error) if error is not None else None,
                original_execution_id,
                created,
                created if status != "pending" else None,
                finished,
                finished if status == "cancelled" else None,
                duration_ms if terminal else None,
                last_seq,
            ),
        )
        return execution_id

    async def add_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        seq: int,
        position: int,
        status: str = "success",
        step_type: str = "transform",
        input: Any = None,
        output: Any = None,
        error: Any = None,
        at: datetime | None = None,
    ) -> None:
        at = at or datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
        await self.execute(
            "INSERT INTO execution_steps (execution_id, step_id, started_seq, position,"
            " step_name, step_type, status, attempts, input, output, error, started_at,"
            " finished_at, duration_ms) VALUES (%s,%s,%s,%s,%s,%s,%s,1,%s,%s,%s,%s,%s,%s)",
            (
                execution_id,
                step_id,
                seq,
                position,
                f"Step {step_id}",
                step_type,
                status,
                Jsonb(input),
                Jsonb(output) if output is not None else None,
                Jsonb(error) if error is not None else None,
                at,
                at + timedelta(milliseconds=5),
                5,
            ),
        )

    async def add_log(
        self,
        execution_id: str,
        seq: int,
        message: str,
        *,
        level: str = "info",
        step_id: str | None = None,
        data: Any = None,
        at: datetime | None = None,
    ) -> None:
        await self.execute(
            "INSERT INTO execution_logs (execution_id, seq, time, level, message, step_id, data)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (
                execution_id,
                seq,
                at or datetime(2025, 1, 6, 12, 30, 0, 123000, tzinfo=UTC),
                level,
                message,
                step_id,
                Jsonb(data) if data is not None else None,
            ),
        )

    async def finish(self, execution_id: str, status: str, **fields: Any) -> None:
        """Move an execution to a terminal status and notify, as the projector does."""
        now = datetime.now(UTC)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE executions SET status = %s, finished_at = %s,"
                " cancelled_at = CASE WHEN %s = 'cancelled' THEN %s END,"
                " duration_ms = 42, output = %s WHERE id = %s",
                (status, now, status, now, Jsonb(fields.get("output")), execution_id),
            )
            await conn.execute(
                "SELECT pg_notify('jobsprint_executions', %s)", (f"{execution_id} {status}",)
            )

    async def remove(self, execution_id: str) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute("DELETE FROM executions WHERE id = %s", (execution_id,))
            await conn.execute(
                "SELECT pg_notify('jobsprint_executions', %s)", (f"{execution_id} deleted",)
            )
