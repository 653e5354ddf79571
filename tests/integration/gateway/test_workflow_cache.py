"""The workflow cache: execute reads a workflow once, and an update or delete made through
ANY gateway is what the next execute runs (the trigger's notification evicts the entry)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from jobsprint.events import ExecuteWorkflow, Topics
from jobsprint.gateway.settings import GatewaySettings
from tests.integration.gateway.support import (
    WORKFLOW,
    Caller,
    consume_commands,
    create_workflow,
    running,
)

pytestmark = pytest.mark.integration


async def execute(client: httpx.AsyncClient, caller: Caller, workflow_id: str) -> httpx.Response:
    return await client.post(
        f"/v1/workflows/{workflow_id}/execute", json={}, headers=caller.headers
    )


async def executed_versions(bootstrap: str, topics: Topics, expect: int) -> list[int]:
    commands = await consume_commands(bootstrap, topics, expect=expect, settle_s=0.5)
    versions = []
    for envelope in commands:
        assert isinstance(envelope.data, ExecuteWorkflow)
        versions.append(envelope.data.workflow_version)
    return sorted(versions)  # commands of different partitions come in any order


async def until(check: Any, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_update_through_another_gateway_is_what_the_next_execute_runs(
    settings: GatewaySettings, caller: Caller, bootstrap: str, topics: Topics
) -> None:
    async with running(settings) as (one, app_one), running(settings) as (two, _):
        cache_one = app_one.state.gateway.adapters.workflows
        await until(lambda: cache_one.enabled)
        workflow = await create_workflow(two, caller)
        for _ in range(3):
            assert (await execute(one, caller, workflow["id"])).status_code == 202
        assert cache_one.misses == 1 and cache_one.hits == 2  # read once, then from memory

        changed = {**WORKFLOW, "name": "Renamed"}
        answer = await two.put(
            f"/v1/workflows/{workflow['id']}", json=changed, headers=caller.headers
        )
        assert answer.status_code == 200, answer.text
        await until(lambda: len(cache_one) == 0)  # gateway two's update reached gateway one
        assert (await execute(one, caller, workflow["id"])).status_code == 202

        answer = await two.delete(f"/v1/workflows/{workflow['id']}", headers=caller.headers)
        assert answer.status_code == 200, answer.text
        await until(lambda: len(cache_one) == 0)
        gone = await execute(one, caller, workflow["id"])
        assert gone.status_code == 404, gone.text

    assert await executed_versions(bootstrap, topics, expect=4) == [1, 1, 1, 2]


async def test_the_gateway_that_updates_runs_the_new_version_at_once(
    gateway: httpx.AsyncClient, caller: Caller, bootstrap: str, topics: Topics
) -> None:
    workflow = await create_workflow(gateway, caller)
    assert (await execute(gateway, caller, workflow["id"])).status_code == 202
    for version in (2, 3):
        changed = {**WORKFLOW, "name": f"Version {version}"}
        answer = await gateway.put(
            f"/v1/workflows/{workflow['id']}", json=changed, headers=caller.headers
        )
        assert answer.json()["data"]["version"] == version
        assert (await execute(gateway, caller, workflow["id"])).status_code == 202
    assert await executed_versions(bootstrap, topics, expect=3) == [1, 2, 3]
