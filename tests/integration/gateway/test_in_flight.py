"""Accepted executions no executor has picked up yet: listed as `pending` beside the read
model until the projector writes them, and the upkeep that tidies the request table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from jobsprint.gateway.app import apply_migrations
from jobsprint.gateway.upkeep import Tidied, tidy_requests
from tests.integration.gateway.support import Caller, ReadModel, create_workflow

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)


async def listed(client: httpx.AsyncClient, who: Caller, **params: Any) -> list[tuple[str, str]]:
    answer = await client.get("/v1/executions", params=params, headers=who.headers)
    assert answer.status_code == 200, answer.text
    return [(item["id"], item["status"]) for item in answer.json()["data"]]


async def projected_flags(url: str, ids: list[str]) -> dict[str, bool]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT id, projected FROM execution_requests WHERE id = ANY(%s)", (ids,)
        )
        return {row[0]: row[1] for row in await cur.fetchall()}


async def test_accepted_executions_are_listed_pending_until_projected(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel
) -> None:
    workflow = await create_workflow(gateway, caller)
    old = [
        await rows.add_execution(caller.workspace_id, created_at=T0 + timedelta(minutes=i))
        for i in range(2)
    ]
    accepted = []
    for i in range(3):
        answer = await gateway.post(
            f"/v1/workflows/{workflow['id']}/execute",
            json={"inputData": {"i": i}},
            headers=caller.headers,
        )
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["data"]["executionId"])
    pending = [(i, "pending") for i in reversed(accepted)]
    done = [(i, "success") for i in reversed(old)]

    assert await listed(gateway, caller) == pending + done
    assert await listed(gateway, caller, status="pending") == pending
    assert await listed(gateway, caller, status="success") == done
    assert await listed(gateway, caller, workflowId=workflow["id"]) == pending
    assert await listed(gateway, caller, workflowId="wf_someone_else") == []

    # cursors walk across both sources, both ways
    first = await gateway.get("/v1/executions", params={"limit": 2}, headers=caller.headers)
    second = await gateway.get(
        "/v1/executions",
        params={"limit": 2, "after": first.json()["pagination"]["nextCursor"]},
        headers=caller.headers,
    )
    assert [item["id"] for item in second.json()["data"]] == [accepted[0], old[1]]
    back = await gateway.get(
        "/v1/executions",
        params={"limit": 2, "before": second.json()["pagination"]["prevCursor"]},
        headers=caller.headers,
    )
    assert [item["id"] for item in back.json()["data"]] == [accepted[2], accepted[1]]

    # the projector writes one: listed once, with the read model's status, at once
    await rows.add_execution(
        caller.workspace_id,
        execution_id=accepted[1],
        workflow_id=workflow["id"],
        status="running",
        created_at=T0 + timedelta(days=1),
    )
    assert await listed(gateway, caller, workflowId=workflow["id"]) == [
        (accepted[2], "pending"),
        (accepted[1], "running"),
        (accepted[0], "pending"),
    ]
    assert await listed(gateway, caller, status="pending") == [
        (accepted[2], "pending"),
        (accepted[0], "pending"),
    ]
    # and the gateway's upkeep removes its request within a few passes: without an
    # idempotency key, a projected request has nothing left to answer
    for _ in range(50):
        if accepted[1] not in await projected_flags(rows.url, accepted):
            break
        await asyncio.sleep(0.1)
    assert await projected_flags(rows.url, accepted) == {accepted[0]: False, accepted[2]: False}
    answer = await gateway.get(f"/v1/executions/{accepted[1]}", headers=caller.headers)
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "running"


async def test_upkeep_drops_never_produced_requests_and_prunes_old_projected_ones(
    read_model: str, rows: ReadModel
) -> None:
    await apply_migrations(read_model)
    now = datetime.now(UTC)
    cases = {
        # id: (published, projected, age, idempotency key)
        "exec_never_produced_old": (False, False, timedelta(minutes=5), None),
        "exec_never_produced_new": (False, False, timedelta(seconds=1), None),
        "exec_in_flight_old": (True, False, timedelta(hours=30), None),
        "exec_projected_old": (True, True, timedelta(hours=25), "k1"),
        "exec_projected_new": (True, True, timedelta(hours=1), "k2"),
        "exec_written_keyed": (True, False, timedelta(seconds=1), "k3"),
        "exec_written_keyless": (True, False, timedelta(seconds=1), None),
    }
    for execution_id, (published, projected, age, key) in cases.items():
        await rows.execute(
            "INSERT INTO execution_requests (id, workspace_id, workflow_id, workflow_name,"
            " workflow_version, triggered_by, requested_at, published_at, projected,"
            " idempotency_key) VALUES (%s, 'ws', 'wf', 'W', 1, 'api', %s, %s, %s, %s)",
            (execution_id, now - age, (now - age) if published else None, projected, key),
        )
    # the projector has written these two
    for execution_id in ("exec_written_keyed", "exec_written_keyless"):
        await rows.add_execution("ws", execution_id=execution_id)
    async with AsyncConnectionPool(read_model, min_size=1, max_size=2, open=False) as pool:
        tidied = await tidy_requests(
            pool, abandoned_after=timedelta(seconds=60), keep_for=timedelta(hours=24)
        )
    assert tidied is not None
    assert tidied == Tidied(
        removed_projected=1, marked_projected=1, dropped_unpublished=1, pruned=1
    )
    left = await projected_flags(read_model, list(cases))
    assert left == {
        "exec_in_flight_old": False,  # still waiting for an executor: kept, however old
        "exec_never_produced_new": False,  # its gateway may still be producing it
        "exec_projected_new": True,  # inside the idempotency window
        "exec_written_keyed": True,  # its key answers replays for the window
    }
