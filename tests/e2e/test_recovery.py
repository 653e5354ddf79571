"""Kill -9 of an executor mid-batch, then a projector rebuild: nothing lost, nothing doubled,
and the rebuilt read model equals the live one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
import psycopg
import pytest

from .system import System
from .test_executions_api import create_workflow, execute

pytestmark = pytest.mark.e2e

THREE_STEPS: dict[str, Any] = {
    "name": "Three steps with a wait",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 1.5}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": "{{ steps.a.output * 10 }}"},
        },
    ],
}
LOG_LINES = 1 + 2 * 3 + 1  # start, started/completed per step, end


async def test_kill_9_of_an_executor_mid_batch_loses_and_duplicates_nothing(
    system: System, api: httpx.AsyncClient
) -> None:
    system.start("executor-3")  # a spare to take over
    workflow_id = await create_workflow(api, THREE_STEPS)
    ids = [
        (await execute(api, workflow_id, {"inputData": {"i": i}})).json()["data"]["executionId"]
        for i in range(200)
    ]
    await asyncio.sleep(1.0)
    system.kill("executor-1")
    async with asyncio.timeout(120):
        while True:
            rows = await asyncio.to_thread(read_statuses, system.database_url, ids)
            if len(rows) == len(ids) and all(s in ("success", "error") for s, _ in rows.values()):
                break
            await asyncio.sleep(0.5)
    assert {status for status, _ in rows.values()} == {"success"}
    assert [rows[e][1] for e in ids] == [i * 10 for i in range(200)]
    with psycopg.connect(system.database_url) as conn:
        steps = dict(
            conn.execute(
                "SELECT execution_id, count(*) FROM execution_steps WHERE execution_id = ANY(%s)"
                " GROUP BY 1",
                (ids,),
            ).fetchall()
        )
        logs = dict(
            conn.execute(
                "SELECT execution_id, count(*) FROM execution_logs WHERE execution_id = ANY(%s)"
                " GROUP BY 1",
                (ids,),
            ).fetchall()
        )
        attempts = conn.execute(
            "SELECT max(attempts) FROM execution_steps WHERE execution_id = ANY(%s)", (ids,)
        ).fetchone()
    assert set(steps.values()) == {3}
    assert set(logs.values()) == {LOG_LINES}
    assert attempts == (1,)


def read_statuses(database_url: str, ids: list[str]) -> dict[str, tuple[str, Any]]:
    with psycopg.connect(database_url) as conn:
        return {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                "SELECT id, status, output FROM executions WHERE id = ANY(%s)", (ids,)
            )
        }


async def test_rebuild_of_the_read_model_equals_the_live_one(
    system: System, api: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(api, THREE_STEPS)
    last = None
    for i in range(20):
        last = (await execute(api, workflow_id, {"inputData": {"i": i}})).json()["data"]
    assert last is not None
    execution_id = last["executionId"]
    async with asyncio.timeout(60):
        while (await api.get(f"/v1/executions/{execution_id}")).json()["data"][
            "status"
        ] != "success":
            await asyncio.sleep(0.2)
    await api.delete(f"/v1/executions/{execution_id}")
    await asyncio.sleep(1.0)  # let the projector apply the tail
    env = system.env()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "jobsprint.projector", "rebuild", "--schema", "rebuilt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    compared = subprocess.run(
        [sys.executable, "-m", "jobsprint.projector", "compare", "public", "rebuilt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr[-3000:]
