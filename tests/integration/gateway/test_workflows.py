"""Workflow CRUD through HTTP: versions, validation with every problem listed, webhooks."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.integration.gateway.support import BASE, WORKFLOW, Caller, create_workflow

pytestmark = pytest.mark.integration


async def test_create_get_update_delete_a_workflow(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    created = await create_workflow(gateway, caller)
    assert created["id"].startswith("wf_")
    assert created["version"] == 1
    assert created["name"] == WORKFLOW["name"]
    assert created["description"] == WORKFLOW["description"]
    assert created["trigger"] == {"type": "manual"}
    assert [s["id"] for s in created["steps"]] == ["node_1", "node_2", "node_3"]
    assert created["output"] == WORKFLOW["output"]
    assert created["createdAt"].endswith("Z") and created["updatedAt"] == created["createdAt"]
    assert "hookUrl" not in created

    got = await gateway.get(f"/v1/workflows/{created['id']}", headers=caller.headers)
    assert got.status_code == 200
    assert got.json() == {"success": True, "data": created}

    changed = copy.deepcopy(WORKFLOW)
    changed["name"] = "Renamed"
    put = await gateway.put(f"/v1/workflows/{created['id']}", json=changed, headers=caller.headers)
    assert put.status_code == 200, put.text
    assert put.json()["data"]["version"] == 2
    assert put.json()["data"]["name"] == "Renamed"
    assert put.json()["data"]["createdAt"] == created["createdAt"]

    deleted = await gateway.delete(f"/v1/workflows/{created['id']}", headers=caller.headers)
    assert deleted.json() == {"success": True, "data": {"id": created["id"], "deleted": True}}
    for method in ("GET", "DELETE"):
        again = await gateway.request(
            method, f"/v1/workflows/{created['id']}", headers=caller.headers
        )
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "not_found"


async def test_an_invalid_definition_lists_every_problem(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    broken: dict[str, Any] = {
        "name": "",
        "colour": "blue",
        "steps": [
            {"id": "node_1", "name": "A", "type": "teleport", "params": {}},
            {"id": "node_1", "name": "B", "type": "http", "params": {"url": "ftp://x"}},
            {"id": "2bad", "type": "log", "params": {"message": "{{ nope( }}"}},
        ],
    }
    answer = await gateway.post("/v1/workflows", json=broken, headers=caller.headers)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    fields = [d["field"] for d in error["details"]]
    for expected in (
        "trigger",
        "name",
        "colour",
        "steps[0].type",
        "steps[1].id",
        "steps[1].params.url",
        "steps[2].id",
        "steps[2].name",
        "steps[2].params.message",
    ):
        assert expected in fields, (expected, error["details"])
    assert all(set(d) == {"field", "message"} and d["message"] for d in error["details"])
    # nothing was stored
    listed = await gateway.get("/v1/workflows", headers=caller.headers)
    assert listed.json()["data"] == []

    also_put = await gateway.put(
        "/v1/workflows/wf_01jgz0000000000000000000", json=broken, headers=caller.headers
    )
    assert also_put.status_code == 400
    not_json = await gateway.post(
        "/v1/workflows",
        content=b"name: yaml",
        headers={**caller.headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"


async def test_workflows_are_listed_newest_first_with_cursors(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    made = [
        (await create_workflow(gateway, caller, {**WORKFLOW, "name": f"wf {i}"}))["id"]
        for i in range(5)
    ]
    first = await gateway.get("/v1/workflows", params={"limit": 2}, headers=caller.headers)
    body = first.json()
    assert [w["id"] for w in body["data"]] == made[::-1][:2]
    assert body["pagination"]["hasMore"] is True and body["pagination"]["prevCursor"] is None
    seen = [w["id"] for w in body["data"]]
    cursor = body["pagination"]["nextCursor"]
    while cursor:
        page = await gateway.get(
            "/v1/workflows", params={"limit": 2, "after": cursor}, headers=caller.headers
        )
        seen += [w["id"] for w in page.json()["data"]]
        cursor = page.json()["pagination"]["nextCursor"]
    assert seen == made[::-1]
    # a mangled cursor is refused
    mangled = await gateway.get(
        "/v1/workflows",
        params={"after": body["pagination"]["nextCursor"].swapcase()},
        headers=caller.headers,
    )
    assert mangled.status_code == 400
    over = await gateway.get("/v1/workflows", params={"limit": 101}, headers=caller.headers)
    assert over.status_code == 400


async def test_a_webhook_workflow_has_a_hook_url(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    hooked = await create_workflow(gateway, caller, {**WORKFLOW, "trigger": {"type": "webhook"}})
    assert hooked["trigger"] == {"type": "webhook"}
    token = hooked["hookUrl"].removeprefix(f"{BASE}/v1/hooks/")
    assert len(token) == 32
    # a new version keeps the hook
    again = await gateway.put(
        f"/v1/workflows/{hooked['id']}",
        json={**WORKFLOW, "trigger": {"type": "webhook"}, "name": "v2"},
        headers=caller.headers,
    )
    assert again.json()["data"]["hookUrl"] == hooked["hookUrl"]
    assert again.json()["data"]["version"] == 2
