"""Execute and webhooks: the command on the commands topic, idempotency, waiting, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from jobsprint.events import ExecuteWorkflow, Topics
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.tokens import READ
from tests.integration.gateway.conftest import MakeCaller
from tests.integration.gateway.support import (
    BASE,
    WORKFLOW,
    Caller,
    ReadModel,
    closed_port,
    consume_commands,
    create_workflow,
    running,
)

pytestmark = pytest.mark.integration


async def count_requests(database: str) -> int:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        cur = await conn.execute("SELECT count(*) FROM execution_requests")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_execute_produces_exactly_one_execute_command(
    gateway: httpx.AsyncClient, caller: Caller, bootstrap: str, topics: Topics
) -> None:
    workflow = await create_workflow(gateway, caller)
    body = {"inputData": {"email": {"from": "user@example.com"}}, "options": {"timeout": 120}}
    answer = await gateway.post(
        f"/v1/workflows/{workflow['id']}/execute", json=body, headers=caller.headers
    )
    assert answer.status_code == 202, answer.text
    data = answer.json()["data"]
    assert set(data) == {"executionId", "status", "startedAt", "url"}
    assert data["executionId"].startswith("exec_")
    assert data["status"] == "pending"
    assert data["url"] == f"{BASE}/v1/executions/{data['executionId']}"
    assert data["startedAt"].endswith("Z")

    commands = await consume_commands(bootstrap, topics, expect=1)
    assert len(commands) == 1
    envelope = commands[0]
    assert envelope.type == "execution.execute.v1"
    assert envelope.execution_id == data["executionId"]
    assert envelope.workspace_id == caller.workspace_id
    command = envelope.data
    assert isinstance(command, ExecuteWorkflow)
    assert command.workflow_id == workflow["id"]
    assert command.workflow_name == WORKFLOW["name"]
    assert command.workflow_version == 1
    assert command.triggered_by == "api"
    assert command.timeout_s == 120
    assert command.input == body["inputData"]
    assert set(command.workflow) == {"name", "description", "trigger", "steps", "output"}
    assert [s["id"] for s in command.workflow["steps"]] == ["node_1", "node_2", "node_3"]
    assert command.workflow["output"] == WORKFLOW["output"]


async def test_get_right_after_execute_answers_pending(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    workflow = await create_workflow(gateway, caller)
    answer = await gateway.post(
        f"/v1/workflows/{workflow['id']}/execute",
        json={"inputData": {"k": "v"}},
        headers=caller.headers,
    )
    execution_id = answer.json()["data"]["executionId"]
    got = await gateway.get(f"/v1/executions/{execution_id}", headers=caller.headers)
    assert got.status_code == 200
    data = got.json()["data"]
    assert data["id"] == execution_id
    assert data["status"] == "pending"
    assert data["workflowId"] == workflow["id"]
    assert data["workflowName"] == WORKFLOW["name"]
    assert data["triggeredBy"] == "api"
    assert data["inputData"] == {"k": "v"}
    assert data["startedAt"] == answer.json()["data"]["startedAt"]
    assert data["executionSteps"] == [] and data["logs"] == []
    logs = await gateway.get(f"/v1/executions/{execution_id}/logs", headers=caller.headers)
    assert logs.json() == {"success": True, "data": {"logs": []}}


async def test_concurrent_identical_requests_with_one_idempotency_key_make_one_execution(
    gateway: httpx.AsyncClient, caller: Caller, bootstrap: str, topics: Topics
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"
    headers = {**caller.headers, "Idempotency-Key": "order-42"}
    body = {"inputData": {"order": 42}}
    answers = await asyncio.gather(
        *(gateway.post(url, json=body, headers=headers) for _ in range(20))
    )
    assert [a.status_code for a in answers] == [202] * 20, [a.text for a in answers]
    ids = {a.json()["data"]["executionId"] for a in answers}
    assert len(ids) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19
    commands = await consume_commands(bootstrap, topics, expect=1, settle_s=2)
    assert [c.execution_id for c in commands] == list(ids)

    # later replays too; the same key for another request is a conflict
    again = await gateway.post(url, json=body, headers=headers)
    assert again.json()["data"]["executionId"] in ids
    other = await gateway.post(url, json={"inputData": {"order": 43}}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["details"] == {"executionId": next(iter(ids))}
    # another key is another execution
    fresh = await gateway.post(
        url, json=body, headers={**caller.headers, "Idempotency-Key": "order-43"}
    )
    assert fresh.json()["data"]["executionId"] not in ids
    too_long = await gateway.post(
        url, json=body, headers={**caller.headers, "Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["details"][0]["field"] == "Idempotency-Key"


async def test_an_idempotency_key_older_than_a_day_is_released(
    gateway: httpx.AsyncClient, caller: Caller, read_model: str
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"
    headers = {**caller.headers, "Idempotency-Key": "daily"}
    first = (await gateway.post(url, json={}, headers=headers)).json()["data"]["executionId"]
    async with await psycopg.AsyncConnection.connect(read_model, autocommit=True) as conn:
        await conn.execute(
            "UPDATE execution_requests SET requested_at = requested_at - interval '25 hours'"
        )
    second = (await gateway.post(url, json={}, headers=headers)).json()["data"]["executionId"]
    assert second != first


async def test_wait_for_completion_answers_the_result_or_202_when_the_bound_passes(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"

    async def play_projector() -> None:
        # the projector: row appears as running, then a terminal status is notified
        for _ in range(100):
            async with await psycopg.AsyncConnection.connect(rows.url) as conn:
                cur = await conn.execute("SELECT id FROM execution_requests")
                found = await cur.fetchone()
            if found:
                break
            await asyncio.sleep(0.05)
        assert found is not None
        await rows.add_execution(
            caller.workspace_id,
            execution_id=found[0],
            workflow_id=workflow["id"],
            status="running",
        )
        await asyncio.sleep(0.3)
        await rows.finish(found[0], "success", output={"sent": True})

    waiting = gateway.post(
        url, json={"options": {"waitForCompletion": True, "timeout": 30}}, headers=caller.headers
    )
    answer, _ = await asyncio.gather(waiting, play_projector())
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert set(data) == {
        "executionId",
        "status",
        "startedAt",
        "finishedAt",
        "duration",
        "outputData",
    }
    assert data["status"] == "success"
    assert data["outputData"] == {"sent": True}
    assert data["duration"] == 42

    # nothing finishes it: the server's max_wait_s (3 s here) bounds the wait
    started = asyncio.get_running_loop().time()
    slow = await gateway.post(
        url, json={"options": {"waitForCompletion": True, "timeout": 60}}, headers=caller.headers
    )
    waited = asyncio.get_running_loop().time() - started
    assert slow.status_code == 202
    assert slow.json()["data"]["status"] == "pending"
    assert 2.5 < waited < 8
    # options.timeout bounds it too
    started = asyncio.get_running_loop().time()
    quick = await gateway.post(
        url, json={"options": {"waitForCompletion": True, "timeout": 1}}, headers=caller.headers
    )
    assert quick.status_code == 202
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_a_replayed_wait_answers_a_finished_execution_at_once(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"
    headers = {**caller.headers, "Idempotency-Key": "replayed-wait"}
    first = await gateway.post(url, json={"inputData": {"n": 1}}, headers=headers)
    assert first.status_code == 202, first.text
    execution_id = first.json()["data"]["executionId"]
    await rows.add_execution(
        caller.workspace_id, execution_id=execution_id, workflow_id=workflow["id"]
    )
    await rows.finish(execution_id, "success", output={"sent": True})

    # no notification will come: the replay must read the finished row, not wait for one
    started = asyncio.get_running_loop().time()
    replay = await gateway.post(
        url,
        json={"inputData": {"n": 1}, "options": {"waitForCompletion": True, "timeout": 30}},
        headers=headers,
    )
    assert asyncio.get_running_loop().time() - started < 0.5
    assert replay.status_code == 200, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["data"]["executionId"] == execution_id
    assert replay.json()["data"]["outputData"] == {"sent": True}


async def test_execute_validates_its_body(gateway: httpx.AsyncClient, caller: Caller) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"

    async def problem(body: Any) -> list[dict[str, str]]:
        answer = await gateway.post(url, json=body, headers=caller.headers)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["success"] is False
        details: list[dict[str, str]] = answer.json()["error"]["details"]
        return details

    assert (await problem({"options": {"timeout": 0}}))[0]["field"] == "options.timeout"
    assert (await problem({"options": {"timeout": 86401}}))[0]["field"] == "options.timeout"
    assert (await problem({"options": {"timeout": "300"}}))[0]["field"] == "options.timeout"
    unknown = await problem({"options": {"waitForCompletion": False, "retries": 3}})
    assert unknown == [{"field": "options.retries", "message": "is not a known field"}]
    assert (await problem({"input": {}}))[0]["field"] == "input"
    assert (await problem({"inputData": [1, 2]}))[0]["field"] == "inputData"
    assert (await problem([1]))[0]["message"] == "must be a JSON object"

    raw = await gateway.post(
        url,
        content=b'{"inputData": ',
        headers={**caller.headers, "Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"

    deep: Any = "x"
    for _ in range(40):
        deep = {"d": deep}
    too_deep = await gateway.post(url, json={"inputData": deep}, headers=caller.headers)
    assert too_deep.status_code == 400
    assert "deeper than 32" in too_deep.json()["error"]["message"]
    shallow: Any = "x"
    for _ in range(30):
        shallow = {"d": shallow}
    fine = await gateway.post(url, json={"inputData": shallow}, headers=caller.headers)
    assert fine.status_code == 202

    missing = await gateway.post(
        "/v1/workflows/wf_01jgz0000000000000000000/execute", json={}, headers=caller.headers
    )
    assert missing.status_code == 404


async def test_execute_answers_its_location_replays_and_errors_in_the_envelope(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"
    answer = await gateway.post(url, headers=caller.headers)  # no body at all: all defaults
    assert answer.status_code == 202, answer.text
    execution_id = answer.json()["data"]["executionId"]
    assert answer.headers["location"] == f"{BASE}/v1/executions/{execution_id}"
    assert answer.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in answer.headers

    keyed = {**caller.headers, "Idempotency-Key": "where"}
    first = await gateway.post(url, json={}, headers=keyed)
    replay = await gateway.post(url, json={}, headers=keyed)
    assert "idempotent-replayed" not in first.headers
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"] != answer.headers["location"]

    missing = await gateway.post(
        "/v1/workflows/wf_01jgz0000000000000000000/execute", json={}, headers=caller.headers
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.content == (
        b'{"success":false,"error":{"code":"not_found",'
        b'"message":"workflow wf_01jgz0000000000000000000 not found","details":null}}'
    )
    other = await gateway.get(url, headers=caller.headers)
    assert other.status_code == 405
    assert other.headers["allow"] == "POST"
    assert other.json()["error"]["code"] == "method_not_allowed"

    text = (await gateway.get("/metrics")).text
    assert 'route="/v1/workflows/{workflow_id}/execute",status="202"' in text
    assert workflow["id"] not in text


async def test_execute_checks_the_token_then_the_body_then_the_key_then_the_workflow(
    gateway: httpx.AsyncClient, caller: Caller, make_caller: MakeCaller, read_model: str
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"
    missing = "/v1/workflows/wf_01jgz0000000000000000000/execute"
    reader = await make_caller("acme", [READ])
    bad_body = {"options": {"timeout": 0}}
    bad_key = {"Idempotency-Key": "k" * 201}

    async def refusal(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        answer = await gateway.post(path, json=body, headers=headers)
        return answer.status_code, answer.json()["error"]["details"]

    assert (await refusal(missing, bad_body, bad_key))[0] == 401
    assert (await refusal(missing, bad_body, {**reader.headers, **bad_key})) == (
        403,
        {"requiredScopes": ["executions:write"]},
    )
    status, details = await refusal(missing, bad_body, {**caller.headers, **bad_key})
    assert (status, details[0]["field"]) == (400, "options.timeout")
    status, details = await refusal(missing, {}, {**caller.headers, **bad_key})
    assert (status, details[0]["field"]) == (400, "Idempotency-Key")
    status, details = await refusal(url, {}, {**caller.headers, "Idempotency-Key": ""})
    assert (status, details[0]["field"]) == (400, "Idempotency-Key")
    assert (await refusal(missing, {}, {**caller.headers, "Idempotency-Key": "k"}))[0] == 404
    assert await count_requests(read_model) == 0


async def test_bodies_over_the_limit_answer_413_with_or_without_content_length(
    settings: GatewaySettings, caller: Caller
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048})
    async with running(small) as (client, _):
        workflow = await create_workflow(client, caller)
        url = f"/v1/workflows/{workflow['id']}/execute"
        big = b'{"inputData": {"blob": "' + b"x" * 4096 + b'"}}'
        declared = await client.post(
            url, content=big, headers={**caller.headers, "Content-Type": "application/json"}
        )
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 512):
                yield big[start : start + 512]

        chunked = await client.post(url, content=chunks(), headers=caller.headers)
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413
        assert chunked.json()["error"]["code"] == "payload_too_large"

        async def fine_chunks() -> AsyncIterator[bytes]:
            yield b'{"inputData": '
            yield b'{"a": 1}}'

        ok = await client.post(url, content=fine_chunks(), headers=caller.headers)
        assert ok.status_code == 202, ok.text


async def test_chunked_413_over_a_real_http_server(
    settings: GatewaySettings, caller: Caller
) -> None:
    """The same through uvicorn (h11/httptools parse the chunked upload for real)."""
    import uvicorn

    from jobsprint.gateway.app import create_app

    port = closed_port()
    small = settings.model_copy(update={"max_body_bytes": 2048})
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(small),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            http="httptools",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            workflow = await create_workflow(client, caller)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b" " * 512

            url = f"/v1/workflows/{workflow['id']}/execute"
            answer = await client.post(url, content=chunks(), headers=caller.headers)
            assert answer.status_code == 413
            assert answer.json()["error"]["code"] == "payload_too_large"
            # a declared size is refused before the upload is read; the connection survives
            sized = await client.post(url, content=b" " * 300_000, headers=caller.headers)
            assert sized.status_code == 413
            assert "content-length" in sized.request.headers
            health = await client.get("/healthz")
            assert health.json() == {"success": True, "data": {"status": "ok"}}
    finally:
        server.should_exit = True
        await task


async def test_kafka_down_answers_503_and_leaves_nothing_behind(
    settings: GatewaySettings, caller: Caller, read_model: str
) -> None:
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{closed_port()}"})
    async with running(down, wait_for_kafka=False) as (client, _):
        workflow = await create_workflow(client, caller)  # reads and workflow writes still work
        answer = await client.post(
            f"/v1/workflows/{workflow['id']}/execute",
            json={"inputData": {"a": 1}},
            headers={**caller.headers, "Idempotency-Key": "k1"},
        )
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["error"]["code"] == "unavailable"
        assert await count_requests(read_model) == 0
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "Kafka" in ready.json()["error"]["message"]
        listed = await client.get("/v1/executions", headers=caller.headers)
        assert listed.status_code == 200


async def test_webhooks_start_executions_without_a_bearer_token(
    gateway: httpx.AsyncClient, caller: Caller, bootstrap: str, topics: Topics
) -> None:
    hooked = await create_workflow(gateway, caller, {**WORKFLOW, "trigger": {"type": "webhook"}})
    hook_url = hooked["hookUrl"]
    assert hook_url.startswith(f"{BASE}/v1/hooks/")
    path = hook_url.removeprefix(BASE)

    answer = await gateway.post(path, json={"email": {"from": "a@b.c"}})
    assert answer.status_code == 202, answer.text
    execution_id = answer.json()["data"]["executionId"]
    commands = await consume_commands(bootstrap, topics, expect=1)
    assert len(commands) == 1
    command = commands[0].data
    assert isinstance(command, ExecuteWorkflow)
    assert command.triggered_by == "webhook"
    assert command.input == {"email": {"from": "a@b.c"}}
    assert commands[0].execution_id == execution_id
    got = await gateway.get(f"/v1/executions/{execution_id}", headers=caller.headers)
    assert got.json()["data"]["triggeredBy"] == "webhook"

    assert (await gateway.post(path, json=[1, 2])).status_code == 400
    assert (await gateway.post("/v1/hooks/" + "x" * 32, json={})).status_code == 404

    # a manual workflow has no hook; turning the trigger to manual disables the hook
    manual = await gateway.put(
        f"/v1/workflows/{hooked['id']}", json=WORKFLOW, headers=caller.headers
    )
    assert "hookUrl" not in manual.json()["data"]
    assert (await gateway.post(path, json={})).status_code == 404
    again = await gateway.put(
        f"/v1/workflows/{hooked['id']}",
        json={**WORKFLOW, "trigger": {"type": "webhook"}},
        headers=caller.headers,
    )
    new_path = again.json()["data"]["hookUrl"].removeprefix(BASE)
    assert (await gateway.post(new_path, json={})).status_code == 202
    await gateway.delete(f"/v1/workflows/{hooked['id']}", headers=caller.headers)
    assert (await gateway.post(new_path, json={})).status_code == 404
