"""A rolling restart of executors and the projector under load (SIGTERM, as Kubernetes
does): every execution ends, none is stuck, nothing is shown twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest

from .system import System
from .test_executions_api import create_workflow, execute
from .test_recovery import LOG_LINES, read_statuses

pytestmark = pytest.mark.e2e

WITH_WAIT: dict[str, Any] = {
    "name": "Rolling restart load",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 0.8}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": "{{ steps.a.output * 10 }}"},
        },
    ],
}


async def submit(api: httpx.AsyncClient, workflow_id: str, count: int, ids: list[str]) -> None:
    for _ in range(count):
        response = await execute(api, workflow_id, {"inputData": {"i": len(ids)}})
        assert response.status_code == 202, response.text
        ids.append(response.json()["data"]["executionId"])
        await asyncio.sleep(0.02)


@pytest.mark.timeout(240)
async def test_rolling_restart_of_executors_and_projector_loses_nothing(
    system: System, api: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(api, WITH_WAIT)
    ids: list[str] = []
    load = asyncio.create_task(submit(api, workflow_id, 400, ids))
    await asyncio.sleep(1.0)
    for name in ("executor-1", "executor-2", "projector"):
        code = await asyncio.to_thread(system.terminate, name)
        assert code == 0, f"{name} exited {code} on SIGTERM:\n{system.log_tail(name)}"
        await asyncio.to_thread(system.start, name)
        await asyncio.sleep(1.0)
    await load
    async with asyncio.timeout(120):
        while True:
            rows = await asyncio.to_thread(read_statuses, system.database_url, ids)
            if len(rows) == len(ids) and all(s == "success" for s, _ in rows.values()):
                break
            await asyncio.sleep(0.5)
    assert [rows[e][1] for e in ids] == [i * 10 for i in range(len(ids))]
    with psycopg.connect(system.database_url) as conn:
        logs = dict(
            conn.execute(
                "SELECT execution_id, count(*) FROM execution_logs WHERE execution_id = ANY(%s)"
                " GROUP BY 1",
                (ids,),
            ).fetchall()
        )
    assert set(logs.values()) == {LOG_LINES}
