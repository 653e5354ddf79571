"""Tenant isolation: a token of another workspace, pointed at every endpoint with the ids of
the first workspace, gets 404 or an empty answer — never the first workspace's data, and
never a change to it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.e2e.system import System
from tests.security.conftest import Tenant, client_for, create_workflow, run, tenant

pytestmark = pytest.mark.e2e

OK: dict[str, Any] = {
    "name": "Owner's workflow",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.secret }}"}},
        {"id": "say", "name": "Say", "type": "log", "params": {"message": "{{ input.secret }}"}},
    ],
}
FAILS: dict[str, Any] = {
    "name": "Owner's failing workflow",
    "steps": [{"id": "boom", "name": "Boom", "type": "fail", "params": {"code": "planned"}}],
}
SLOW: dict[str, Any] = {
    "name": "Owner's slow workflow",
    "steps": [{"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 30}}],
}
SECRET = "owner-secret-7f3a"


def workspace_id(system: System, name: str) -> str:
    with psycopg.connect(system.database_url) as conn:
        row = conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return str(row[0])


async def test_another_workspace_gets_404_or_empty_everywhere(secured: System) -> None:
    owner = tenant(secured)
    intruder = tenant(secured)
    async with client_for(secured, owner) as api:
        workflow_id = await create_workflow(api, OK)
        failing_id = await create_workflow(api, FAILS)
        slow_id = await create_workflow(api, SLOW)
        done = await run(api, workflow_id, {"secret": SECRET})
        failed = await run(api, failing_id, {"secret": SECRET})
        running = (
            await api.post(f"/v1/workflows/{slow_id}/execute", json={"inputData": {}})
        ).json()["data"]["executionId"]
        listing = (await api.get("/v1/executions", params={"limit": 1})).json()
        cursor = listing["pagination"]["nextCursor"]
        assert cursor, listing
        for _ in range(50):  # until the metrics service has loaded the finished ones
            owner_metrics = (await api.get("/v1/executions/metrics")).json()["data"]
            if owner_metrics["totalExecutions"] >= 2:
                break
            await asyncio.sleep(0.2)
        assert owner_metrics["totalExecutions"] >= 2, owner_metrics
    owner_ws = workspace_id(secured, owner.workspace)
    ids = [done["id"], failed["id"], running]

    async with client_for(secured, intruder) as other:
        attempts: list[tuple[str, str, Any]] = [
            ("GET", f"/v1/workflows/{workflow_id}", None),
            ("PUT", f"/v1/workflows/{workflow_id}", {**OK, "trigger": {"type": "manual"}}),
            ("DELETE", f"/v1/workflows/{failing_id}", None),
            ("POST", f"/v1/workflows/{workflow_id}/execute", {"inputData": {}}),
        ]
        for execution_id in ids:
            attempts += [
                ("GET", f"/v1/executions/{execution_id}", None),
                ("GET", f"/v1/executions/{execution_id}/logs", None),
                ("POST", f"/v1/executions/{execution_id}/cancel", None),
                ("POST", f"/v1/executions/{execution_id}/retry", {}),
                ("DELETE", f"/v1/executions/{execution_id}", None),
            ]
        for method, path, body in attempts:
            response = await other.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            assert SECRET not in response.text
            assert response.json()["error"]["code"] == "not_found"

        listings = [
            {},
            {"workflowId": workflow_id},
            {"status": "success"},
            {"status": "error"},
            {"status": "running"},
            {"workflowId": workflow_id, "fromDate": "2000-01-01", "toDate": "2999-01-01"},
        ]
        for params in listings:
            response = await other.get("/v1/executions", params=params)
            assert response.status_code == 200, response.text
            assert response.json()["data"] == [], params
        workflows = await other.get("/v1/workflows")
        assert workflows.status_code == 200 and workflows.json()["data"] == []
        # the owner's cursor leads nowhere for the intruder
        borrowed = await other.get("/v1/executions", params={"limit": 1, "after": cursor})
        assert borrowed.status_code in (200, 400), borrowed.text
        assert borrowed.status_code == 400 or borrowed.json()["data"] == []
        logs = await other.get(f"/v1/executions/{done['id']}/logs", params={"stepId": "say"})
        assert logs.status_code == 404 and SECRET not in logs.text

        for params in (
            {},
            {"workflowId": workflow_id},
            {"workflowId": workflow_id, "granularity": "hour"},
            {"workspaceId": owner_ws},
            {"workspaceId": owner_ws, "workflowId": workflow_id},
            {"workspace_id": owner_ws},
        ):
            response = await other.get("/v1/executions/metrics", params=params)
            assert response.status_code == 200, (params, response.text)
            data = response.json()["data"]
            assert data["totalExecutions"] == 0, (params, data)
            assert all(bucket["count"] == 0 for bucket in data["timeSeries"]), (params, data)
        # the same Idempotency-Key in another workspace names another execution
        own_flow = await create_workflow(other, OK)
        for key_user in (other,):
            replay = await key_user.post(
                f"/v1/workflows/{own_flow}/execute",
                json={"inputData": {"secret": "mine"}},
                headers={"Idempotency-Key": "shared-key-1"},
            )
            assert replay.status_code == 202, replay.text
            assert replay.json()["data"]["executionId"] not in ids

    async with client_for(secured, owner) as api:
        # nothing the intruder did changed the owner's data
        still = (await api.get(f"/v1/executions/{running}")).json()["data"]
        assert still["status"] == "running"
        kept = (await api.get(f"/v1/executions/{done['id']}")).json()["data"]
        assert kept["status"] == "success" and kept["executionSteps"][0]["output"] == SECRET
        assert (await api.get(f"/v1/workflows/{failing_id}")).status_code == 200
        current = (await api.get(f"/v1/workflows/{workflow_id}")).json()["data"]
        assert current["version"] == 1, current
        await api.post(f"/v1/executions/{running}/cancel")


async def test_the_owner_still_sees_its_data_with_the_other_token_around(
    secured: System,
) -> None:
    """Control for the test above: the same requests with the owner's token answer data,
    so the 404s there come from isolation, not from broken ids."""
    owner: Tenant = tenant(secured)
    async with client_for(secured, owner) as api:
        workflow_id = await create_workflow(api, OK)
        done = await run(api, workflow_id, {"secret": SECRET})
        assert (await api.get(f"/v1/executions/{done['id']}")).status_code == 200
        logs = await api.get(f"/v1/executions/{done['id']}/logs")
        assert SECRET in logs.text
        listed = await api.get("/v1/executions", params={"workflowId": workflow_id})
        assert [item["id"] for item in listed.json()["data"]] == [done["id"]]
