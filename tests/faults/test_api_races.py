"""Races through the API: cancel against a step finishing, 500 times (scenario 8); 100
concurrent executes with one Idempotency-Key (scenario 9); retry of a deleted, a running
and a successful execution (scenario 10). One system for the module."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from jobsprint.events import (
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionSucceeded,
    StepStarted,
)
from tests.faults.conftest import Systems
from tests.faults.support import (
    FaultSystem,
    audit_events,
    create_workflow,
    gateway_client,
    not_terminal,
    read_events,
    wait_terminal,
    write_figures,
)

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
async def races(module_systems: Systems) -> FaultSystem:
    return await module_systems.make(
        services=["projector", "executor-1", "executor-2", "api-gateway"], partitions=6
    )


@pytest.fixture
async def api(races: FaultSystem) -> AsyncIterator[httpx.AsyncClient]:
    token = races.create_token(f"ws-races-{random.getrandbits(32):08x}")
    async with gateway_client(races, token) as client:
        yield client


RACE: dict[str, Any] = {
    "name": "Steps that end while a cancel arrives",
    "steps": [
        {"id": "a", "name": "A", "type": "delay", "params": {"seconds": 0.5}},
        {"id": "b", "name": "B", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {"id": "c", "name": "C", "type": "delay", "params": {"seconds": 0.5}},
        {"id": "d", "name": "D", "type": "transform", "params": {"output": "{{ steps.b.output }}"}},
    ],
}
RACES = 500


@pytest.mark.timeout(300)
async def test_cancel_racing_step_completion_500_times(
    races: FaultSystem, api: httpx.AsyncClient
) -> None:
    began = time.monotonic()
    workflow_id = await create_workflow(api, RACE)
    gate = asyncio.Semaphore(40)

    async def race(i: int) -> tuple[str, int, str | None]:
        async with gate:
            executed = await api.post(
                f"/v1/workflows/{workflow_id}/execute", json={"inputData": {"i": i}}
            )
            assert executed.status_code == 202, executed.text
            execution_id = executed.json()["data"]["executionId"]
            # spread the cancels over the whole life of an execution (~1 s of delays)
            await asyncio.sleep(random.uniform(0.2, 1.4))
            cancelled = await api.post(f"/v1/executions/{execution_id}/cancel")
            status = (
                cancelled.json().get("data", {}).get("status") if cancelled.is_success else None
            )
            return execution_id, cancelled.status_code, status

    outcomes = await asyncio.gather(*(race(i) for i in range(RACES)))
    ids = [execution_id for execution_id, _, _ in outcomes]
    rows = await wait_terminal(races.database_url, ids, 120, strict=False)
    events = await read_events(races.bootstrap, f"{races.topic_prefix}.events")
    audit = audit_events(events, ids)
    with psycopg.connect(races.database_url) as conn:
        steps = conn.execute(
            "SELECT execution_id, step_id, status, started_seq FROM execution_steps"
            " WHERE execution_id = ANY(%s)",
            (ids,),
        ).fetchall()

    started_after_cancel = []
    disagreeing = []
    answer_disagrees = []
    for execution_id, code, status in outcomes:
        history = audit.by_execution.get(execution_id, [])
        cancel = next((e for e in history if isinstance(e.data, ExecutionCancelled)), None)
        if cancel is not None:
            started_after_cancel += [
                e for e in history if isinstance(e.data, StepStarted) and e.seq > cancel.seq
            ]
        end = audit.terminal.get(execution_id)
        from_log = (
            {
                ExecutionSucceeded: "success",
                ExecutionFailed: "error",
                ExecutionCancelled: "cancelled",
            }.get(type(end.data))
            if end is not None
            else None
        )
        row = rows.get(execution_id)
        if row is None or row["status"] != from_log:
            disagreeing.append((execution_id, row and row["status"], from_log))
        if (code == 200 and from_log != "cancelled") or (code == 409 and from_log == "cancelled"):
            answer_disagrees.append((execution_id, code, status, from_log))
    cancel_seqs = {e.execution_id: e.seq for e in events if isinstance(e.data, ExecutionCancelled)}
    steps_after_cancel = [s for s in steps if s[0] in cancel_seqs and s[3] > cancel_seqs[s[0]]]
    still_running = [s for s in steps if s[0] in cancel_seqs and s[2] == "running"]
    codes = Counter(code for _, code, _ in outcomes)
    write_figures(
        "8-cancel-race",
        {
            "races": len(outcomes),
            "cancel_answers": {str(k): v for k, v in codes.items()},
            "final": dict(Counter(r["status"] for r in rows.values())),
            "steps_started_after_cancel": len(started_after_cancel) + len(steps_after_cancel),
            "status_disagrees_with_log": len(disagreeing),
            "answer_disagrees_with_log": len(answer_disagrees),
            "lost": len(not_terminal(rows, ids)) + audit.lost,
            "duplicated": audit.duplicated,
            "duration_s": round(time.monotonic() - began, 1),
        },
    )
    assert not not_terminal(rows, ids)
    assert not audit.problems(), audit.problems()
    assert not started_after_cancel, started_after_cancel[:5]
    assert not steps_after_cancel and not still_running, (steps_after_cancel[:5], still_running[:5])
    assert not disagreeing, disagreeing[:5]
    assert not answer_disagrees, answer_disagrees[:5]
    assert set(codes) <= {200, 202, 409}, codes
    # the race must actually have happened both ways
    assert codes[200] > 0 and codes[409] > 0, codes


TWO_STEPS: dict[str, Any] = {
    "name": "Two steps",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.n }}"}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": "{{ steps.a.output + 1 }}"},
        },
    ],
}


@pytest.mark.timeout(120)
async def test_100_concurrent_executes_with_one_idempotency_key_make_one_execution(
    races: FaultSystem, api: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    key = f"order-{random.getrandbits(48):012x}"
    async with httpx.AsyncClient(
        base_url=races.gateway_url,
        headers=dict(api.headers),
        timeout=60,
        limits=httpx.Limits(max_connections=100),
    ) as wide:
        responses = await asyncio.gather(
            *(
                wide.post(
                    f"/v1/workflows/{workflow_id}/execute",
                    json={"inputData": {"n": 41}},
                    headers={"Idempotency-Key": key},
                )
                for _ in range(100)
            )
        )
    codes = Counter(r.status_code for r in responses)
    ids = {r.json()["data"]["executionId"] for r in responses if r.is_success}
    replayed = sum(r.headers.get("idempotent-replayed") == "true" for r in responses)
    assert codes == {202: 100}, (codes, [r.text for r in responses if not r.is_success][:3])
    assert len(ids) == 1, ids
    [execution_id] = ids
    rows = await wait_terminal(races.database_url, [execution_id], 30)
    await asyncio.sleep(1)  # anything a second execution would have produced by now
    events = await read_events(races.bootstrap, f"{races.topic_prefix}.events")
    requested = [
        e
        for e in events
        if isinstance(e.data, ExecutionRequested) and e.data.workflow_id == workflow_id
    ]
    with psycopg.connect(races.database_url) as conn:
        [[stored]] = conn.execute(
            "SELECT count(*) FROM execution_requests WHERE workflow_id = %s", (workflow_id,)
        ).fetchall()
        [[projected]] = conn.execute(
            "SELECT count(*) FROM executions WHERE workflow_id = %s", (workflow_id,)
        ).fetchall()
    listed = (await api.get("/v1/executions", params={"workflowId": workflow_id})).json()
    write_figures(
        "9-idempotency",
        {
            "concurrent_requests": len(responses),
            "answers": {str(k): v for k, v in codes.items()},
            "replayed": replayed,
            "executions": len(requested),
            "lost": 0 if rows[execution_id]["status"] == "success" else 1,
            "duplicated": len(requested) - 1,
        },
    )
    assert replayed == 99
    assert rows[execution_id]["status"] == "success" and rows[execution_id]["output"] == 42
    assert (len(requested), stored, projected) == (1, 1, 1)
    assert [item["id"] for item in listed["data"]] == [execution_id]


FLAKY: dict[str, Any] = {
    "name": "Fails",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": 1}},
        {"id": "boom", "name": "Boom", "type": "fail", "params": {"code": "planned"}},
    ],
}
SLOW: dict[str, Any] = {
    "name": "Slow",
    "steps": [{"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 30}}],
}


@pytest.mark.timeout(120)
async def test_retry_of_deleted_running_and_successful_executions(
    races: FaultSystem, api: httpx.AsyncClient
) -> None:
    failing = await create_workflow(api, FLAKY)
    slow = await create_workflow(api, SLOW)
    passing = await create_workflow(api, TWO_STEPS)

    async def execute(workflow_id: str, wait: bool) -> str:
        response = await api.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"inputData": {"n": 1}, "options": {"waitForCompletion": wait}},
        )
        assert response.status_code in (200, 202), response.text
        return str(response.json()["data"]["executionId"])

    deleted = await execute(failing, True)
    await wait_terminal(races.database_url, [deleted], 30)
    assert (await api.delete(f"/v1/executions/{deleted}")).status_code == 200
    running = await execute(slow, False)
    deadline = time.monotonic() + 30
    while (await api.get(f"/v1/executions/{running}")).json()["data"]["status"] != "running":
        assert time.monotonic() < deadline, "the slow execution never started"
        await asyncio.sleep(0.2)
    succeeded = await execute(passing, True)
    await wait_terminal(races.database_url, [succeeded], 30)

    answers = {
        "deleted": await api.post(f"/v1/executions/{deleted}/retry", json={}),
        "running": await api.post(f"/v1/executions/{running}/retry", json={}),
        "successful": await api.post(f"/v1/executions/{succeeded}/retry", json={}),
    }
    await api.post(f"/v1/executions/{running}/cancel")
    with psycopg.connect(races.database_url) as conn:
        [[retries]] = conn.execute(
            "SELECT count(*) FROM execution_requests WHERE original_execution_id = ANY(%s)",
            ([deleted, running, succeeded],),
        ).fetchall()
    write_figures(
        "10-retry-states",
        {name: r.status_code for name, r in answers.items()} | {"retries_written": retries},
    )
    assert {name: r.status_code for name, r in answers.items()} == {
        "deleted": 404,
        "running": 409,
        "successful": 409,
    }, {name: r.text for name, r in answers.items()}
    for response in answers.values():
        assert response.json()["success"] is False
        assert response.json()["error"]["code"] in ("not_found", "conflict")
    assert retries == 0
