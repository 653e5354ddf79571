"""Hostile input: unknown fields, wrong types, deep nesting, huge arrays, bodies over 1 MiB
(with and without Content-Length), invalid cursors and dates. Each gets a clear 4xx naming
the offending field — never a 500 — and nothing is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.system import System
from tests.security.conftest import Tenant, client_for, create_workflow, tenant

pytestmark = pytest.mark.e2e

ONE_STEP: dict[str, Any] = {
    "name": "One step",
    "trigger": {"type": "manual"},
    "steps": [{"id": "a", "name": "A", "type": "transform", "params": {"output": 1}}],
}
MIB = 1024 * 1024


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def clear_4xx_problem(
    response: httpx.Response, status: int, field: str | None, why: str
) -> str | None:
    """Why `response` is not `status` with the error envelope naming `field` (in the details
    or the message); None when it is."""
    if response.status_code != status:
        return f"{why}: {response.status_code} (wanted {status}) {response.text[:300]}"
    try:
        body = response.json()
        error = body["error"]
        assert body["success"] is False and error["code"] and error["message"]
    except Exception:
        return f"{why}: not the error envelope: {response.text[:300]}"
    if field is not None:
        fields = [d.get("field") for d in error.get("details") or [] if isinstance(d, dict)]
        if field not in fields and field not in error["message"]:
            return f"{why}: {field!r} not named in {error}"
    return None


class Findings:
    """Collects every problem of a test, so one run shows them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, response: httpx.Response, status: int, field: str | None, why: str) -> None:
        problem = clear_4xx_problem(response, status, field, why)
        if problem:
            self.problems.append(problem)

    async def answer(
        self, api: httpx.AsyncClient, why: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        """The response, or None (noted as a problem) when the server sent none."""
        try:
            return await api.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            self.problems.append(f"{why}: no HTTP answer ({type(exc).__name__}: {exc})")
            return None

    def require(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def assert_none(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def owned_rows(database_url: str, workspace: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        [[ws]] = conn.execute("SELECT id FROM workspaces WHERE name = %s", (workspace,)).fetchall()
        counts = {}
        for table in ("execution_requests", "workflows", "executions"):
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE workspace_id = %s", (ws,)
            ).fetchone()
            counts[table] = int(row[0]) if row else 0
        row = conn.execute(
            "SELECT count(*) FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id"
            " WHERE w.workspace_id = %s",
            (ws,),
        ).fetchone()
        counts["workflow_versions"] = int(row[0]) if row else 0
        return counts


@pytest.fixture
async def owner(secured: System) -> Tenant:
    return tenant(secured)


@pytest.fixture
async def api(secured: System, owner: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(secured, owner) as client:
        yield client


async def test_execute_bodies_with_unknown_fields_wrong_types_or_deep_nesting(
    secured: System, owner: Tenant, api: httpx.AsyncClient
) -> None:
    found = Findings()
    workflow_id = await create_workflow(api, ONE_STEP)
    before = owned_rows(secured.database_url, owner.workspace)
    url = f"/v1/workflows/{workflow_id}/execute"
    cases: list[tuple[str, Any, str | None]] = [
        ("unknown top-level field", {"inputData": {}, "foo": 1}, "foo"),
        ("unknown option", {"options": {"timeout": 10, "retries": 3}}, "options.retries"),
        ("inputData a string", {"inputData": "text"}, "inputData"),
        ("inputData an array", {"inputData": [1, 2]}, "inputData"),
        ("timeout a string", {"options": {"timeout": "10"}}, "options.timeout"),
        ("timeout a float", {"options": {"timeout": 1.5}}, "options.timeout"),
        ("timeout zero", {"options": {"timeout": 0}}, "options.timeout"),
        ("timeout huge", {"options": {"timeout": 10**12}}, "options.timeout"),
        ("wait a string", {"options": {"waitForCompletion": "yes"}}, "options.waitForCompletion"),
        ("options a list", {"options": [1]}, "options"),
        ("inputData nested 33 levels deep", {"inputData": nested(33)}, "inputData"),
        ("inputData nested 200 levels deep", {"inputData": nested(200)}, "inputData"),
    ]
    for why, body, field in cases:
        found.check(await api.post(url, json=body), 400, field, why)
    raw_cases: list[tuple[str, bytes]] = [
        ("not JSON", b'{"inputData": '),
        ("a JSON array", b"[]"),
        ("a JSON string", b'"hello"'),
        ("a lone surrogate", b'{"inputData": {"s": "\\ud800"}}'),
        ("100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000),
        ("100,000 nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ]
    for why, raw in raw_cases:
        response = await api.post(url, content=raw, headers={"Content-Type": "application/json"})
        found.check(response, 400, None, why)
    too_long_key = await api.post(url, json={}, headers={"Idempotency-Key": "k" * 300})
    found.check(too_long_key, 400, "Idempotency-Key", "a 300-character Idempotency-Key")
    after = owned_rows(secured.database_url, owner.workspace)
    found.require(after == before, f"rows written: {before} -> {after}")
    found.assert_none()


async def test_a_nul_character_in_the_input_is_a_clear_answer_not_a_500(
    secured: System, owner: Tenant, api: httpx.AsyncClient
) -> None:
    """Postgres text cannot hold U+0000: the gateway must store it some other way (the
    projector stores U+FFFD) or refuse it naming the field, not fail."""
    found = Findings()
    workflow_id = await create_workflow(api, ONE_STEP)
    why = "NUL in inputData"
    url = f"/v1/workflows/{workflow_id}/execute"
    response = await found.answer(api, why, "POST", url, json={"inputData": {"s": "a\u0000b"}})
    if response is not None and response.status_code != 202:
        found.check(response, 400, "inputData", why)
    why = "NUL in a workflow description"
    body = {**ONE_STEP, "description": "nul \u0000 here"}
    created = await found.answer(api, why, "POST", "/v1/workflows", json=body)
    if created is not None and created.status_code != 201:
        found.check(created, 400, "description", why)
    found.assert_none()


async def test_huge_arrays_are_refused_or_handled_never_a_500(
    secured: System, owner: Tenant, api: httpx.AsyncClient
) -> None:
    found = Findings()
    before = owned_rows(secured.database_url, owner.workspace)
    many_steps = {
        **ONE_STEP,
        "steps": [
            {"id": f"s{i}", "name": f"S{i}", "type": "transform", "params": {"output": i}}
            for i in range(5000)
        ],
    }
    found.check(await api.post("/v1/workflows", json=many_steps), 400, "steps", "5,000 steps")
    after = owned_rows(secured.database_url, owner.workspace)
    found.require(after == before, f"rows written: {before} -> {after}")

    workflow_id = await create_workflow(api, ONE_STEP)
    big_input = {"inputData": {"items": [0] * 400_000}}  # ~800 KB: under the body limit
    response = await api.post(f"/v1/workflows/{workflow_id}/execute", json=big_input)
    if response.status_code != 202:
        found.check(response, 400, "inputData", "an inputData array of 400,000 items")
    repeated = await api.get("/v1/executions", params=[("status", "error")] * 5000)
    found.require(repeated.status_code < 500, f"5,000 repeated ?status=: {repeated.text[:200]}")
    found.assert_none()


async def test_bodies_over_1_mib_answer_413_with_and_without_content_length(
    secured: System, owner: Tenant, api: httpx.AsyncClient
) -> None:
    found = Findings()
    workflow_id = await create_workflow(api, ONE_STEP)
    before = owned_rows(secured.database_url, owner.workspace)
    big = b'{"inputData": {"blob": "' + b"x" * MIB + b'"}}'

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    for path in (f"/v1/workflows/{workflow_id}/execute", "/v1/workflows"):
        sized = await api.post(path, content=big, headers={"Content-Type": "application/json"})
        found.check(sized, 413, None, f"{path} with Content-Length")
        streamed = await api.post(
            path, content=chunked(), headers={"Content-Type": "application/json"}
        )
        found.require(
            "content-length" not in streamed.request.headers, "the upload was not chunked"
        )
        found.check(streamed, 413, None, f"{path} chunked")
    after = owned_rows(secured.database_url, owner.workspace)
    found.require(after == before, f"rows written: {before} -> {after}")
    found.assert_none()


async def test_invalid_cursors_dates_and_query_values_name_the_parameter(
    secured: System, owner: Tenant, api: httpx.AsyncClient
) -> None:
    found = Findings()
    workflow_id = await create_workflow(api, ONE_STEP)
    for _ in range(3):
        done = await api.post(
            f"/v1/workflows/{workflow_id}/execute", json={"options": {"waitForCompletion": True}}
        )
        assert done.status_code == 200, done.text
    page = (await api.get("/v1/executions", params={"limit": 1})).json()
    cursor = page["pagination"]["nextCursor"]
    assert cursor
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    cases: list[tuple[str, dict[str, Any], str | None]] = [
        ("limit not a number", {"limit": "ten"}, "limit"),
        ("limit 0", {"limit": 0}, "limit"),
        ("limit 101", {"limit": 101}, "limit"),
        ("garbage after", {"after": "garbage"}, "after"),
        ("garbage before", {"before": "%%%"}, "before"),
        ("tampered cursor", {"after": tampered}, "after"),
        ("cursor of other filters", {"after": cursor, "status": "error"}, "after"),
        ("after and before", {"after": cursor, "before": cursor}, None),
        ("status unknown", {"status": "nope"}, "status"),
        ("fromDate words", {"fromDate": "yesterday"}, "fromDate"),
        ("toDate impossible", {"toDate": "2025-13-45"}, "toDate"),
        ("fromDate after toDate", {"fromDate": "2025-02-01", "toDate": "2025-01-01"}, "fromDate"),
        ("fromDate year 99999", {"fromDate": "99999-01-01"}, "fromDate"),
        ("fromDate with NUL", {"fromDate": "2025-01-01\u0000"}, "fromDate"),
    ]
    for why, params, field in cases:
        found.check(await api.get("/v1/executions", params=params), 400, field, why)
    for why, params, field in (
        ("metrics granularity unknown", {"granularity": "minute"}, "granularity"),
        ("metrics fromDate", {"fromDate": "not-a-date"}, "fromDate"),
        ("metrics toDate", {"toDate": "2025-02-30"}, "toDate"),
    ):
        found.check(await api.get("/v1/executions/metrics", params=params), 400, field, why)
    execution_id = page["data"][0]["id"]
    logs = await api.get(f"/v1/executions/{execution_id}/logs", params={"level": "loud"})
    found.check(logs, 400, "level", "log level unknown")
    for why, body, field in (
        ("retry unknown field", {"bogus": 1}, "bogus"),
        ("retry fromStep a number", {"fromStep": 5}, "fromStep"),
        ("retry workflowVersion text", {"workflowVersion": "old"}, "workflowVersion"),
    ):
        response = await api.post(f"/v1/executions/{execution_id}/retry", json=body)
        found.check(response, 400, field, why)
    found.assert_none()


async def test_odd_ids_in_paths_are_404_not_500(secured: System, api: httpx.AsyncClient) -> None:
    found = Findings()
    for odd in ("x" * 5000, "exec_%00", "exec_%FF%FE", "..%2F..%2Fetc", "exec_' OR '1'='1"):
        for method, path in (
            ("GET", f"/v1/executions/{odd}"),
            ("GET", f"/v1/executions/{odd}/logs"),
            ("POST", f"/v1/executions/{odd}/cancel"),
            ("DELETE", f"/v1/executions/{odd}"),
            ("GET", f"/v1/workflows/{odd}"),
            ("POST", f"/v1/workflows/{odd}/execute"),
        ):
            why = f"{method} {path[:60]}"
            body = {} if method == "POST" else None
            response = await found.answer(api, why, method, path, json=body)
            if response is not None:
                found.require(
                    response.status_code in (400, 404),
                    f"{why}: {response.status_code} {response.text[:200]}",
                )
    found.assert_none()


async def test_workflow_definitions_name_the_bad_field(
    secured: System, owner: Tenant, api: httpx.AsyncClient
) -> None:
    found = Findings()
    before = owned_rows(secured.database_url, owner.workspace)
    step = ONE_STEP["steps"][0]
    deep_params = {**ONE_STEP, "steps": [{**step, "params": {"output": nested(40)}}]}
    cases: list[tuple[str, Any, str]] = [
        ("unknown field", {**ONE_STEP, "colour": "red"}, "colour"),
        ("name a number", {**ONE_STEP, "name": 7}, "name"),
        ("step unknown field", {**ONE_STEP, "steps": [{**step, "bogus": 1}]}, "steps[0].bogus"),
        ("step type unknown", {**ONE_STEP, "steps": [{**step, "type": "shell"}]}, "steps[0].type"),
        ("steps an object", {**ONE_STEP, "steps": {"a": step}}, "steps"),
        ("params nested 40 levels deep", deep_params, "steps[0].params"),
    ]
    for why, body, field in cases:
        found.check(await api.post("/v1/workflows", json=body), 400, field, why)
    after = owned_rows(secured.database_url, owner.workspace)
    found.require(after == before, f"rows written: {before} -> {after}")
    found.assert_none()
