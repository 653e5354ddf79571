"""Every executions endpoint through HTTP against the running system: gateway -> Kafka ->
executors -> events -> projector -> Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from .system import System

pytestmark = pytest.mark.e2e

TWO_STEPS: dict[str, Any] = {
    "name": "Two steps",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "shape",
            "name": "Shape",
            "type": "transform",
            "params": {"output": {"n": "{{ input.n }}"}},
        },
        {
            "id": "double",
            "name": "Double",
            "type": "transform",
            "params": {"output": {"n": "{{ steps.shape.output.n * 2 }}"}},
        },
    ],
}

FLAKY: dict[str, Any] = {
    "name": "Fails in the middle",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "first",
            "name": "First",
            "type": "transform",
            "params": {"output": {"v": "{{ input.v }}"}},
        },
        {
            "id": "check",
            "name": "Check",
            "type": "condition",
            "params": {"if": "input.ok", "else": "boom"},
        },
        {
            "id": "second",
            "name": "Second",
            "type": "transform",
            "params": {"output": {"v": "{{ steps.first.output.v + 1 }}"}},
        },
        {
            "id": "stop",
            "name": "Stop here",
            "type": "condition",
            "params": {"if": "false", "else": "end"},
        },
        {
            "id": "boom",
            "name": "Boom",
            "type": "fail",
            "params": {"message": "not ok", "code": "not_ok"},
        },
    ],
}

SLOW: dict[str, Any] = {
    "name": "Slow",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 30}},
        {"id": "after", "name": "After", "type": "transform", "params": {"output": 1}},
    ],
}


async def create_workflow(api: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await api.post("/v1/workflows", json=definition)
    assert response.status_code in (200, 201), response.text
    return str(response.json()["data"]["id"])


async def execute(
    api: httpx.AsyncClient, workflow_id: str, body: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    return await api.post(f"/v1/workflows/{workflow_id}/execute", json=body or {}, headers=headers)


async def wait_status(
    api: httpx.AsyncClient, execution_id: str, *statuses: str, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await api.get(f"/v1/executions/{execution_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        if data["status"] in statuses:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution_id} still {data['status']}, wanted {statuses}")
        await asyncio.sleep(0.1)


async def test_sync_execute_returns_the_result_and_get_shows_steps_and_logs(
    api: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    response = await execute(
        api, workflow_id, {"inputData": {"n": 21}, "options": {"waitForCompletion": True}}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "success"
    assert data["outputData"] == {"n": 42}
    assert data["duration"] >= 0 and data["startedAt"] and data["finishedAt"]

    detail = await wait_status(api, data["executionId"], "success")
    assert detail["workflowId"] == workflow_id
    assert detail["workflowName"] == "Two steps"
    assert detail["triggeredBy"] == "api"
    assert detail["inputData"] == {"n": 21}
    assert detail["outputData"] == {"n": 42}
    assert [s["stepId"] for s in detail["executionSteps"]] == ["shape", "double"]
    assert [s["output"] for s in detail["executionSteps"]] == [{"n": 21}, {"n": 42}]
    assert all(s["status"] == "success" for s in detail["executionSteps"])
    messages = [line["message"] for line in detail["logs"]]
    assert messages[0] == "Starting workflow execution"
    assert messages[-1] == "Workflow execution completed successfully"

    logs = (await api.get(f"/v1/executions/{data['executionId']}/logs")).json()["data"]["logs"]
    assert [line["message"] for line in logs] == messages
    assert {"level", "message", "timestamp", "stepId"} <= set(logs[0])
    only_double = await api.get(
        f"/v1/executions/{data['executionId']}/logs", params={"stepId": "double"}
    )
    assert only_double.json()["data"]["logs"]
    assert {line["stepId"] for line in only_double.json()["data"]["logs"]} == {"double"}


async def test_async_execute_is_found_at_once_then_finishes(api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    response = await execute(api, workflow_id, {"inputData": {"n": 1}})
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["status"] in ("pending", "running")
    assert data["url"].endswith(f"/v1/executions/{data['executionId']}")
    found = await api.get(f"/v1/executions/{data['executionId']}")
    assert found.status_code == 200  # never a 404 right after execute
    finished = await wait_status(api, data["executionId"], "success")
    assert finished["outputData"] == {"n": 2}


async def test_list_walks_cursors_forward_and_back_with_filters(api: httpx.AsyncClient) -> None:
    ok_flow = await create_workflow(api, TWO_STEPS)
    bad_flow = await create_workflow(api, FLAKY)
    ids = []
    for i in range(23):
        response = await execute(api, ok_flow, {"inputData": {"n": i}})
        ids.append(response.json()["data"]["executionId"])
    failing = [
        (await execute(api, bad_flow, {"inputData": {"v": 1, "ok": False}})).json()["data"][
            "executionId"
        ]
        for _ in range(3)
    ]
    for execution_id in ids + failing:
        await wait_status(api, execution_id, "success", "error")

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"workflowId": ok_flow, "status": "success", "limit": 10}
        if cursor:
            params["after"] = cursor
        body = (await api.get("/v1/executions", params=params)).json()
        pages.append(body)
        cursor = body["pagination"]["nextCursor"]
        if not body["pagination"]["hasMore"]:
            break
    walked = [item["id"] for page in pages for item in page["data"]]
    assert walked == list(reversed(ids))  # newest first, every one exactly once
    assert [len(p["data"]) for p in pages] == [10, 10, 3]
    assert pages[0]["pagination"]["prevCursor"] is None

    back = (
        await api.get(
            "/v1/executions",
            params={
                "workflowId": ok_flow,
                "status": "success",
                "limit": 10,
                "before": pages[2]["pagination"]["prevCursor"],
            },
        )
    ).json()
    assert [item["id"] for item in back["data"]] == [item["id"] for item in pages[1]["data"]]

    errors = (await api.get("/v1/executions", params={"status": "error"})).json()
    assert {item["id"] for item in errors["data"]} == set(failing)
    mixed = await api.get(
        "/v1/executions", params={"status": "error", "after": pages[0]["pagination"]["nextCursor"]}
    )
    assert mixed.status_code == 400  # a cursor is bound to its filters
    for bad in (
        {"limit": 0},
        {"limit": 101},
        {"after": "garbage"},
        {"status": "nope"},
        {"fromDate": "yesterday"},
    ):
        assert (await api.get("/v1/executions", params=bad)).status_code == 400, bad


async def test_cancel_interrupts_a_running_delay(api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(api, SLOW)
    execution_id = (await execute(api, workflow_id)).json()["data"]["executionId"]
    await wait_status(api, execution_id, "running")
    began = time.monotonic()
    response = await api.post(f"/v1/executions/{execution_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "cancelled"
    assert response.json()["data"]["cancelledAt"]
    assert time.monotonic() - began < 10
    detail = await wait_status(api, execution_id, "cancelled")
    assert [s["status"] for s in detail["executionSteps"]] == ["cancelled"]
    again = await api.post(f"/v1/executions/{execution_id}/cancel")
    assert again.status_code == 409


async def test_retry_from_a_middle_step_reuses_earlier_outputs(api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(api, FLAKY)
    original = (await execute(api, workflow_id, {"inputData": {"v": 1, "ok": False}})).json()[
        "data"
    ]["executionId"]
    failed = await wait_status(api, original, "error")
    assert failed["error"]["code"] == "not_ok"

    response = await api.post(
        f"/v1/executions/{original}/retry",
        json={"fromStep": "check", "inputData": {"v": 1, "ok": True}},
    )
    assert response.status_code in (200, 202), response.text
    data = response.json()["data"]
    assert data["originalExecutionId"] == original
    retried = await wait_status(api, data["executionId"], "success")
    assert retried["triggeredBy"] == "retry"
    assert retried["originalExecutionId"] == original
    steps = {s["stepId"]: s for s in retried["executionSteps"]}
    assert steps["first"]["reusedFrom"] == original
    assert steps["first"]["output"] == {"v": 1}
    assert steps["second"]["output"] == {"v": 2}
    assert steps["check"].get("reusedFrom") is None

    unknown = await api.post(f"/v1/executions/{original}/retry", json={"fromStep": "nope"})
    assert unknown.status_code == 400
    succeeded = await api.post(f"/v1/executions/{data['executionId']}/retry", json={})
    assert succeeded.status_code == 409


async def test_delete_hides_the_execution_everywhere(api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    execution_id = (
        await execute(
            api, workflow_id, {"inputData": {"n": 1}, "options": {"waitForCompletion": True}}
        )
    ).json()["data"]["executionId"]
    await wait_status(api, execution_id, "success")
    response = await api.delete(f"/v1/executions/{execution_id}")
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"id": execution_id, "deleted": True}
    assert (await api.get(f"/v1/executions/{execution_id}")).status_code == 404
    assert (await api.get(f"/v1/executions/{execution_id}/logs")).status_code == 404
    listed = (await api.get("/v1/executions", params={"workflowId": workflow_id})).json()
    assert execution_id not in [item["id"] for item in listed["data"]]
    assert (await api.delete(f"/v1/executions/{execution_id}")).status_code == 404


async def test_delete_of_a_running_execution_is_refused(api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(api, SLOW)
    execution_id = (await execute(api, workflow_id)).json()["data"]["executionId"]
    await wait_status(api, execution_id, "running")
    assert (await api.delete(f"/v1/executions/{execution_id}")).status_code == 409
    await api.post(f"/v1/executions/{execution_id}/cancel")


async def test_idempotency_key_under_20_concurrent_requests(api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    responses = await asyncio.gather(
        *[
            execute(api, workflow_id, {"inputData": {"n": 5}}, **{"Idempotency-Key": "order-77"})
            for _ in range(20)
        ]
    )
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
    ids = {r.json()["data"]["executionId"] for r in responses}
    assert len(ids) == 1
    await wait_status(api, ids.pop(), "success")
    listed = (await api.get("/v1/executions", params={"workflowId": workflow_id})).json()
    assert len(listed["data"]) == 1


async def test_other_workspaces_see_404_and_tokens_are_checked(
    system: System, api: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    execution_id = (
        await execute(
            api, workflow_id, {"inputData": {"n": 1}, "options": {"waitForCompletion": True}}
        )
    ).json()["data"]["executionId"]
    other = system.create_token("ws-other-" + execution_id[-6:])
    async with httpx.AsyncClient(
        base_url=system.gateway_url, headers={"Authorization": f"Bearer {other}"}
    ) as intruder:
        for method, path in [
            ("GET", f"/v1/workflows/{workflow_id}"),
            ("POST", f"/v1/workflows/{workflow_id}/execute"),
            ("GET", f"/v1/executions/{execution_id}"),
            ("GET", f"/v1/executions/{execution_id}/logs"),
            ("POST", f"/v1/executions/{execution_id}/cancel"),
            ("POST", f"/v1/executions/{execution_id}/retry"),
            ("DELETE", f"/v1/executions/{execution_id}"),
        ]:
            response = await intruder.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.text)
        listed = (await intruder.get("/v1/executions")).json()
        assert listed["data"] == []

    anonymous = await httpx.AsyncClient(base_url=system.gateway_url).get("/v1/executions")
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.headers["www-authenticate"]
    bogus = await api.get("/v1/executions", headers={"Authorization": "Bearer jsp_nope"})
    assert bogus.status_code == 401
    reader = system.create_token("ws-reader-" + execution_id[-6:], "executions:read")
    forbidden = await api.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["success"] is False


async def test_bodies_over_1_mib_are_refused_with_413(
    system: System, api: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(api, TWO_STEPS)
    big = b'{"inputData": {"blob": "' + b"x" * (1024 * 1024 + 10) + b'"}}'
    sized = await api.post(
        f"/v1/workflows/{workflow_id}/execute",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert sized.status_code == 413

    async def chunks() -> Any:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    chunked = await api.post(
        f"/v1/workflows/{workflow_id}/execute",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    listed = (await api.get("/v1/executions", params={"workflowId": workflow_id})).json()
    assert listed["data"] == []  # nothing was written
