"""Reading executions (over read-model rows written here, as the projector would) and
acting on them: cursors, details, logs, cancel, retry, delete, the metrics proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from jobsprint.events import CancelExecution, DeleteExecution, RetryExecution, Topics
from jobsprint.gateway.routes import executions as execution_routes
from jobsprint.gateway.settings import GatewaySettings
from tests.integration.gateway.conftest import MakeCaller
from tests.integration.gateway.support import (
    BASE,
    WORKFLOW,
    Caller,
    ReadModel,
    consume_commands,
    create_workflow,
    running,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)


async def walk(
    client: httpx.AsyncClient, who: Caller, params: dict[str, Any], key: str, first: str | None
) -> list[list[str]]:
    """Follow `nextCursor` (key="after") or `prevCursor` (key="before") to the end."""
    pages: list[list[str]] = []
    cursor = first
    while True:
        query = dict(params)
        if cursor is not None:
            query[key] = cursor
        answer = await client.get("/v1/executions", params=query, headers=who.headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append([item["id"] for item in body["data"]])
        cursor = body["pagination"]["nextCursor" if key == "after" else "prevCursor"]
        if key == "after":
            assert body["pagination"]["hasMore"] == (cursor is not None)
        if cursor is None:
            return pages


async def test_cursors_walk_forward_and_back_over_55_filtered_rows(
    gateway: httpx.AsyncClient, caller: Caller, make_caller: MakeCaller, rows: ReadModel
) -> None:
    stranger = await make_caller("globex")
    wanted: list[str] = []
    for i in range(55):
        at = T0 + timedelta(minutes=10 * i)
        wanted.append(
            await rows.add_execution(caller.workspace_id, created_at=at, workflow_id="wf_a")
        )
        # noise around every wanted row: other workflow, other status, other workspace
        await rows.add_execution(caller.workspace_id, created_at=at, workflow_id="wf_b")
        await rows.add_execution(
            caller.workspace_id, created_at=at, workflow_id="wf_a", status="error"
        )
        await rows.add_execution(stranger.workspace_id, created_at=at, workflow_id="wf_a")
    newest_first = sorted(wanted, reverse=True)
    params = {"workflowId": "wf_a", "status": "success", "limit": 10}

    forward = await walk(gateway, caller, params, "after", None)
    assert [len(p) for p in forward] == [10, 10, 10, 10, 10, 5]
    assert [i for page in forward for i in page] == newest_first

    # from the last page back to the first with prevCursor
    last = await gateway.get("/v1/executions", params=params, headers=caller.headers)
    cursor = last.json()["pagination"]["nextCursor"]
    assert last.json()["pagination"]["prevCursor"] is None
    for _ in range(4):
        page = await gateway.get(
            "/v1/executions", params={**params, "after": cursor}, headers=caller.headers
        )
        cursor = page.json()["pagination"]["nextCursor"]
    final = await gateway.get(
        "/v1/executions", params={**params, "after": cursor}, headers=caller.headers
    )
    assert final.json()["pagination"] == {
        "nextCursor": None,
        "prevCursor": final.json()["pagination"]["prevCursor"],
        "hasMore": False,
    }
    backward = await walk(
        gateway, caller, params, "before", final.json()["pagination"]["prevCursor"]
    )
    assert backward == forward[-2::-1]

    # the same cursor with other filters is refused, as are garbage and both directions
    next_cursor = (
        forward
        and (await gateway.get("/v1/executions", params=params, headers=caller.headers)).json()[
            "pagination"
        ]["nextCursor"]
    )
    for changed in ({"status": "error"}, {"workflowId": "wf_b"}, {"fromDate": "2025-01-01"}):
        answer = await gateway.get(
            "/v1/executions",
            params={**params, **changed, "after": next_cursor},
            headers=caller.headers,
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_cursor"
    # a different limit is fine
    relimited = await gateway.get(
        "/v1/executions",
        params={**params, "limit": 3, "after": next_cursor},
        headers=caller.headers,
    )
    assert [i["id"] for i in relimited.json()["data"]] == newest_first[10:13]
    for bad in (
        {"after": "garbage!"},
        {"after": "eyJ2IjoxfQ"},
        {"before": next_cursor},
        {"after": next_cursor, "before": next_cursor},
    ):
        answer = await gateway.get(
            "/v1/executions", params={**params, **bad}, headers=caller.headers
        )
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["code"] == "invalid_cursor"

    # dates bound creation time: [fromDate, toDate], a date alone is midnight UTC
    dated = await walk(
        gateway,
        caller,
        {
            **params,
            "limit": 100,
            "fromDate": "2025-01-06T01:00:00Z",
            "toDate": "2025-01-06T02:00:00.000Z",
        },
        "after",
        None,
    )
    assert dated == [newest_first[-13:-6]]  # minutes 60, 70, ..., 120 inclusive
    day = await gateway.get(
        "/v1/executions",
        params={
            "fromDate": "2025-01-06",
            "toDate": "2025-01-06",
            "workflowId": "wf_a",
            "status": "success",
        },
        headers=caller.headers,
    )
    assert [i["id"] for i in day.json()["data"]] == [wanted[0]]


async def test_list_parameters_are_validated(gateway: httpx.AsyncClient, caller: Caller) -> None:
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "done"}, "status"),
        ({"fromDate": "yesterday"}, "fromDate"),
        ({"fromDate": "2025-02-01", "toDate": "2025-01-01"}, "fromDate"),
    ):
        answer = await gateway.get("/v1/executions", params=params, headers=caller.headers)
        assert answer.status_code == 400, params
        assert answer.json()["error"]["code"] == "validation_error"
        assert answer.json()["error"]["details"][0]["field"] == field
    empty = await gateway.get("/v1/executions", headers=caller.headers)
    assert empty.json() == {
        "success": True,
        "data": [],
        "pagination": {"nextCursor": None, "prevCursor": None, "hasMore": False},
    }


async def test_get_an_execution_with_steps_and_logs(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel
) -> None:
    at = datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
    execution_id = await rows.add_execution(
        caller.workspace_id,
        created_at=at,
        workflow_id="wf_x",
        triggered_by="webhook",
        input={"email": {"from": "user@example.com"}},
        output={"response": "thanks", "sent": True},
        duration_ms=5234,
    )
    await rows.add_step(
        execution_id,
        "node_2",
        seq=5,
        position=1,
        output={"response": "thanks"},
        at=at + timedelta(seconds=1),
    )
    await rows.add_step(
        execution_id, "node_1", seq=2, position=0, input={"x": 1}, output={"email": "e"}, at=at
    )
    await rows.add_log(execution_id, 1, "Starting workflow execution")
    await rows.add_log(
        execution_id,
        3,
        "Processing input data",
        level="debug",
        step_id="node_1",
        data={"input": {"email": "user@example.com"}},
    )
    await rows.add_log(
        execution_id,
        6,
        "Done",
        level="warn",
        at=datetime(2025, 1, 6, 12, 30, 5, 123000, tzinfo=UTC),
    )

    answer = await gateway.get(f"/v1/executions/{execution_id}", headers=caller.headers)
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data == {
        "id": execution_id,
        "workflowId": "wf_x",
        "workflowName": "Email Auto-Responder",
        "workflowVersion": 1,
        "status": "success",
        "startedAt": "2025-01-06T12:30:00.000Z",
        "finishedAt": "2025-01-06T12:30:05.234Z",
        "duration": 5234,
        "triggeredBy": "webhook",
        "inputData": {"email": {"from": "user@example.com"}},
        "originalExecutionId": None,
        "outputData": {"response": "thanks", "sent": True},
        "error": None,
        "executionSteps": [
            {
                "stepId": "node_1",
                "stepName": "Step node_1",
                "stepType": "transform",
                "status": "success",
                "startedAt": "2025-01-06T12:30:00.000Z",
                "finishedAt": "2025-01-06T12:30:00.005Z",
                "duration": 5,
                "attempts": 1,
                "input": {"x": 1},
                "output": {"email": "e"},
                "error": None,
                "reusedFrom": None,
            },
            {
                "stepId": "node_2",
                "stepName": "Step node_2",
                "stepType": "transform",
                "status": "success",
                "startedAt": "2025-01-06T12:30:01.000Z",
                "finishedAt": "2025-01-06T12:30:01.005Z",
                "duration": 5,
                "attempts": 1,
                "input": None,
                "output": {"response": "thanks"},
                "error": None,
                "reusedFrom": None,
            },
        ],
        "logs": [
            {
                "level": "info",
                "message": "Starting workflow execution",
                "timestamp": "2025-01-06T12:30:00.123Z",
                "stepId": None,
            },
            {
                "level": "debug",
                "message": "Processing input data",
                "timestamp": "2025-01-06T12:30:00.123Z",
                "stepId": "node_1",
                "data": {"input": {"email": "user@example.com"}},
            },
            {
                "level": "warn",
                "message": "Done",
                "timestamp": "2025-01-06T12:30:05.123Z",
                "stepId": None,
            },
        ],
    }

    listed = await gateway.get("/v1/executions", headers=caller.headers)
    assert listed.json()["data"] == [
        {
            k: v
            for k, v in data.items()
            if k not in ("outputData", "error", "executionSteps", "logs", "originalExecutionId")
        }
    ]

    logs = await gateway.get(f"/v1/executions/{execution_id}/logs", headers=caller.headers)
    assert logs.json() == {"success": True, "data": {"logs": data["logs"]}}
    only_debug = await gateway.get(
        f"/v1/executions/{execution_id}/logs", params={"level": "debug"}, headers=caller.headers
    )
    assert [e["message"] for e in only_debug.json()["data"]["logs"]] == ["Processing input data"]
    step_logs = await gateway.get(
        f"/v1/executions/{execution_id}/logs",
        params={"stepId": "node_1"},
        headers=caller.headers,
    )
    assert len(step_logs.json()["data"]["logs"]) == 1
    bad_level = await gateway.get(
        f"/v1/executions/{execution_id}/logs", params={"level": "loud"}, headers=caller.headers
    )
    assert bad_level.status_code == 400

    missing = await gateway.get("/v1/executions/exec_nope", headers=caller.headers)
    assert missing.status_code == 404
    assert missing.json() == {
        "success": False,
        "error": {"code": "not_found", "message": "execution exec_nope not found", "details": None},
    }


async def test_failed_execution_shows_its_error(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel
) -> None:
    execution_id = await rows.add_execution(
        caller.workspace_id,
        status="error",
        error={"code": "timeout", "message": "took too long", "stepId": "node_2"},
        original_execution_id="exec_01jgz0000000000000000001",
    )
    data = (await gateway.get(f"/v1/executions/{execution_id}", headers=caller.headers)).json()
    assert data["data"]["error"] == {
        "code": "timeout",
        "message": "took too long",
        "stepId": "node_2",
    }
    assert data["data"]["originalExecutionId"] == "exec_01jgz0000000000000000001"
    listed = await gateway.get("/v1/executions", params={"status": "error"}, headers=caller.headers)
    assert listed.json()["data"][0]["originalExecutionId"] == "exec_01jgz0000000000000000001"


async def test_cancel(
    gateway: httpx.AsyncClient,
    caller: Caller,
    rows: ReadModel,
    bootstrap: str,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(execution_routes, "CONFIRM_WAIT_S", 1.5)
    finished = await rows.add_execution(caller.workspace_id, status="success")
    refused = await gateway.post(f"/v1/executions/{finished}/cancel", headers=caller.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert refused.json()["error"]["details"] == {"status": "success"}

    # nobody stops it within the wait: 202 cancelling, and the command is out
    stuck = await rows.add_execution(caller.workspace_id, status="running")
    answer = await gateway.post(f"/v1/executions/{stuck}/cancel", headers=caller.headers)
    assert answer.status_code == 202
    assert answer.json()["data"] == {"id": stuck, "status": "cancelling"}

    # the executor cancels it (the projector notifies): 200 with cancelledAt
    running_id = await rows.add_execution(caller.workspace_id, status="running")

    async def executor_cancels() -> None:
        await asyncio.sleep(0.3)
        await rows.finish(running_id, "cancelled")

    answer, _ = await asyncio.gather(
        gateway.post(f"/v1/executions/{running_id}/cancel", headers=caller.headers),
        executor_cancels(),
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert set(data) == {"id", "status", "cancelledAt"}
    assert data["id"] == running_id and data["status"] == "cancelled"
    assert data["cancelledAt"].endswith("Z")

    # it finishes on its own first: 409 with the status it ended in
    racing = await rows.add_execution(caller.workspace_id, status="running")

    async def it_succeeds() -> None:
        await asyncio.sleep(0.3)
        await rows.finish(racing, "success")

    answer, _ = await asyncio.gather(
        gateway.post(f"/v1/executions/{racing}/cancel", headers=caller.headers), it_succeeds()
    )
    assert answer.status_code == 409
    assert answer.json()["error"]["details"] == {"status": "success"}

    commands = await consume_commands(bootstrap, topics, expect=3)
    assert sorted(c.execution_id for c in commands) == sorted([stuck, running_id, racing])
    assert all(isinstance(c.data, CancelExecution) for c in commands)


async def test_retry(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel, bootstrap: str, topics: Topics
) -> None:
    workflow = await create_workflow(gateway, caller)
    at = datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
    original = await rows.add_execution(
        caller.workspace_id,
        workflow_id=workflow["id"],
        status="error",
        input={"email": {"from": "a@b.c"}},
    )
    await rows.add_step(
        original, "node_1", seq=2, position=0, input={"i": 1}, output={"to": "a@b.c"}, at=at
    )
    await rows.add_step(
        original,
        "node_2",
        seq=4,
        position=1,
        status="error",
        step_type="log",
        error={"code": "boom", "message": "failed"},
    )
    # the workflow moves on to version 2 (one more step) after the failure
    v2 = {
        **WORKFLOW,
        "steps": [
            *WORKFLOW["steps"],  # type: ignore[list-item]
            {"id": "node_4", "name": "More", "type": "log", "params": {"message": "m"}},
        ],
    }
    assert (
        await gateway.put(f"/v1/workflows/{workflow['id']}", json=v2, headers=caller.headers)
    ).status_code == 200
    url = f"/v1/executions/{original}/retry"

    answer = await gateway.post(url, json={}, headers=caller.headers)
    assert answer.status_code == 202, answer.text
    data = answer.json()["data"]
    assert set(data) == {"executionId", "originalExecutionId", "status", "startedAt", "url"}
    assert data["originalExecutionId"] == original and data["status"] == "pending"
    retry_id = data["executionId"]
    assert retry_id != original

    pending = (await gateway.get(f"/v1/executions/{retry_id}", headers=caller.headers)).json()
    assert pending["data"]["status"] == "pending"
    assert pending["data"]["triggeredBy"] == "retry"
    assert pending["data"]["originalExecutionId"] == original

    latest = await gateway.post(
        url,
        json={"fromStep": "node_1", "workflowVersion": "latest", "inputData": {"n": 2}},
        headers=caller.headers,
    )
    assert latest.status_code == 202, latest.text

    commands = await consume_commands(bootstrap, topics, expect=2)
    by_id = {c.execution_id: c.data for c in commands}
    first = by_id[retry_id]
    assert isinstance(first, RetryExecution)
    assert first.original_execution_id == original
    assert first.from_step == "node_2"  # the failed step
    assert first.workflow_version == 1  # the version the original ran
    assert [s["id"] for s in first.workflow["steps"]] == ["node_1", "node_2", "node_3"]
    assert first.input == {"email": {"from": "a@b.c"}}
    assert [s.step_id for s in first.reused_steps] == ["node_1"]
    reused = first.reused_steps[0]
    assert reused.output == {"to": "a@b.c"} and reused.input == {"i": 1}
    assert reused.step_type == "transform" and reused.started_at == at
    second = by_id[latest.json()["data"]["executionId"]]
    assert isinstance(second, RetryExecution)
    assert second.from_step == "node_1" and second.reused_steps == ()
    assert second.workflow_version == 2 and len(second.workflow["steps"]) == 4
    assert second.input == {"n": 2}

    for body, field in (
        ({"fromStep": "nope"}, "fromStep"),
        ({"fromStep": "node_3"}, "fromStep"),  # node_2 failed before it
        ({"workflowVersion": 9}, "workflowVersion"),
        ({"workflowVersion": "newest"}, "workflowVersion"),
        ({"from": "node_1"}, "from"),
    ):
        bad = await gateway.post(url, json=body, headers=caller.headers)
        assert bad.status_code == 400, body
        assert bad.json()["error"]["details"][0]["field"] == field

    succeeded = await rows.add_execution(caller.workspace_id, workflow_id=workflow["id"])
    refused = await gateway.post(
        f"/v1/executions/{succeeded}/retry", json={}, headers=caller.headers
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"status": "success"}
    # a pending retry (accepted, not projected yet) cannot be retried either
    assert (
        await gateway.post(f"/v1/executions/{retry_id}/retry", json={}, headers=caller.headers)
    ).status_code == 409
    unknown = await gateway.post(
        "/v1/executions/exec_01jgz0000000000000000009/retry", json={}, headers=caller.headers
    )
    assert unknown.status_code == 404

    # Idempotency-Key makes a retried retry request the same execution
    headers = {**caller.headers, "Idempotency-Key": "retry-1"}
    one = await gateway.post(url, json={}, headers=headers)
    two = await gateway.post(url, json={}, headers=headers)
    assert one.json()["data"]["executionId"] == two.json()["data"]["executionId"]


async def test_delete(
    gateway: httpx.AsyncClient, caller: Caller, rows: ReadModel, bootstrap: str, topics: Topics
) -> None:
    running_id = await rows.add_execution(caller.workspace_id, status="running")
    refused = await gateway.delete(f"/v1/executions/{running_id}", headers=caller.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"status": "running"}

    done = await rows.add_execution(caller.workspace_id, status="error", last_seq=11)

    async def projector_deletes() -> None:
        await asyncio.sleep(0.3)
        await rows.remove(done)

    answer, _ = await asyncio.gather(
        gateway.delete(f"/v1/executions/{done}", headers=caller.headers), projector_deletes()
    )
    assert answer.status_code == 200
    assert answer.json() == {"success": True, "data": {"id": done, "deleted": True}}
    commands = await consume_commands(bootstrap, topics, expect=1)
    assert len(commands) == 1 and commands[0].execution_id == done
    assert isinstance(commands[0].data, DeleteExecution)
    assert commands[0].data.last_seq == 11

    again = await gateway.delete(f"/v1/executions/{done}", headers=caller.headers)
    assert again.status_code == 404
    assert (await gateway.get(f"/v1/executions/{done}", headers=caller.headers)).status_code == 404


@pytest.fixture
async def metrics_service() -> AsyncIterator[tuple[str, list[str], list[tuple[int, bytes]]]]:
    """A stand-in metrics service: records request targets, answers from a script."""
    seen: list[str] = []
    script: list[tuple[int, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        seen.append(request.decode().split()[1])
        status, body = script.pop(0)
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen, script


async def test_metrics_are_proxied_with_the_callers_workspace(
    settings: GatewaySettings,
    caller: Caller,
    metrics_service: tuple[str, list[str], list[tuple[int, bytes]]],
) -> None:
    url, seen, script = metrics_service
    async with running(settings.model_copy(update={"metrics_url": url})) as (client, _):
        body = b'{"success":true,"data":{"totalExecutions":3}}'
        script.append((200, body))
        answer = await client.get(
            "/v1/executions/metrics",
            params={"workflowId": "wf_1", "granularity": "day", "workspaceId": "ws_other"},
            headers=caller.headers,
        )
        assert answer.status_code == 200
        assert answer.content == body
        target = urlsplit(seen[0])
        assert target.path == "/v1/metrics"
        assert sorted(parse_qsl(target.query)) == sorted(
            [("workflowId", "wf_1"), ("granularity", "day"), ("workspaceId", caller.workspace_id)]
        )
        invalid = (
            b'{"success":false,"error":{"code":"validation_error","message":"m","details":null}}'
        )
        script.append((400, invalid))
        answer = await client.get(
            "/v1/executions/metrics", params={"granularity": "year"}, headers=caller.headers
        )
        assert answer.status_code == 400 and answer.content == invalid
        script.append((500, b"{}"))
        answer = await client.get("/v1/executions/metrics", headers=caller.headers)
        assert answer.status_code == 503


async def test_metrics_without_the_metrics_service_answer_503(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    answer = await gateway.get("/v1/executions/metrics", headers=caller.headers)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
    assert "Retry-After" in answer.headers
    assert (await gateway.get("/v1/executions/metrics")).status_code == 401


async def test_health_readiness_and_prometheus_metrics(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    assert (await gateway.get("/healthz")).json() == {"success": True, "data": {"status": "ok"}}
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["data"]["status"] == "ready"
    await gateway.get("/v1/executions/exec_01jgz0000000000000000009", headers=caller.headers)
    text = (await gateway.get("/metrics")).text
    assert "jobsprint_http_request_seconds_bucket" in text
    assert 'route="/v1/executions/{execution_id}"' in text
    assert "exec_01jgz0000000000000000009" not in text
    assert "jobsprint_executions_requested_total" in text
    assert f"{BASE}" not in text
