"""Schemathesis against the gateway's own OpenAPI document (`/openapi.json`), with a valid
token: generated requests — valid and invalid ones — never get a 5xx, and every answer
matches the document (status code, content type, body schema). Bounded: a few examples per
operation and mode. Generated ids almost never exist, so a second test requests real
resources (every success answer, conflicts, a wrong scope) and checks them the same way."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

from jobsprint.gateway.tokens import READ
from tests.e2e.system import System
from tests.security.conftest import client_for, create_workflow, tenant

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (it belongs in the dev dependency group)"
)
import hypothesis.configuration  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core import NOT_SET  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

# hypothesis caches (unicode tables) outside the repository
hypothesis.configuration.set_hypothesis_home_dir(
    str(Path(tempfile.gettempdir()) / "jobsprint-hypothesis")
)

EXAMPLES = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SEED = [
    {
        "name": "Seed",
        "steps": [{"id": "a", "name": "A", "type": "transform", "params": {"output": 1}}],
    }
]
FAILING = {
    "name": "Failing",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": {"v": 1}}},
        {"id": "b", "name": "B", "type": "fail", "params": {"message": "no", "code": "no"}},
    ],
}
SLOW = {
    "name": "Slow",
    "trigger": {"type": "manual"},
    "steps": [{"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 30}}],
}
HOOKED = {
    "name": "Hooked",
    "trigger": {"type": "webhook"},
    "steps": [{"id": "a", "name": "A", "type": "transform", "params": {"output": 1}}],
}


async def test_generated_requests_get_no_5xx_and_answers_match_the_schema(
    secured: System,
) -> None:
    owner = tenant(secured)
    async with client_for(secured, owner) as api:
        for definition in SEED:  # something to find, so not every answer is a 404
            workflow_id = await create_workflow(api, definition)
            await api.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"options": {"waitForCompletion": True}},
            )
    failures = await asyncio.to_thread(fuzz, secured.gateway_url, owner.token)
    assert not failures, "\n\n".join(failures)


async def test_real_resources_answer_as_documented(secured: System) -> None:
    owner = tenant(secured)
    reader = tenant(secured, READ)
    failures = await asyncio.to_thread(exercise, secured.gateway_url, owner.headers, reader.headers)
    assert not failures, "\n\n".join(failures)


def exercise(base_url: str, owner: dict[str, str], reader: dict[str, str]) -> list[str]:
    """Each operation's answers on real resources, in an order that reaches them all:
    created, run (succeeded, failed, waited for or not), retried, cancelled, refused,
    deleted. Every answer is checked against the document; one that has the wrong status
    is a failure too."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    failures: list[str] = []

    def call(
        method: str,
        path: str,
        expected: tuple[int, ...],
        *,
        headers: dict[str, str] = owner,
        body: Any = NOT_SET,
        query: dict[str, Any] | None = None,
        **path_parameters: str,
    ) -> Any:
        case = schema[path][method].Case(
            path_parameters=path_parameters, query=query, body=body, headers=headers
        )
        label = f"{method} {case.formatted_path}"
        try:
            response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=60)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{label}: {summary(exc)}")
            return None
        if response.status_code not in expected:
            failures.append(f"{label}: {response.status_code}, not {expected}: {response.text}")
            return None
        return response.json().get("data")

    wait = {"options": {"waitForCompletion": True}}
    workflow = call(
        "POST", "/v1/workflows", (201,), body={"trigger": {"type": "manual"}, **SEED[0]}
    )
    failing = call("POST", "/v1/workflows", (201,), body=FAILING)
    slow = call("POST", "/v1/workflows", (201,), body=SLOW)
    hooked = call("POST", "/v1/workflows", (201,), body=HOOKED)
    if None in (workflow, failing, slow, hooked):
        return failures
    item, execute = "/v1/workflows/{workflow_id}", "/v1/workflows/{workflow_id}/execute"
    call("GET", item, (200,), workflow_id=workflow["id"])
    call("PUT", item, (200,), body=FAILING, workflow_id=failing["id"])
    call("POST", execute, (403,), headers=reader, body={}, workflow_id=workflow["id"])
    done = call("POST", execute, (200,), body=wait, workflow_id=workflow["id"])
    failed = call("POST", execute, (200,), body=wait, workflow_id=failing["id"])
    queued = call("POST", execute, (202,), body={}, workflow_id=slow["id"])
    if None in (done, failed, queued):
        return failures
    one, logs = "/v1/executions/{execution_id}", "/v1/executions/{execution_id}/logs"
    cancel, retry = f"{one}/cancel", f"{one}/retry"
    call("GET", one, (200,), execution_id=queued["executionId"])  # pending or running
    call("POST", cancel, (200, 202), execution_id=queued["executionId"])
    for execution in (done, failed):
        call("GET", one, (200,), execution_id=execution["executionId"])
        call("GET", logs, (200,), query={"level": "info"}, execution_id=execution["executionId"])
    call("POST", cancel, (409,), execution_id=done["executionId"])
    call("POST", retry, (409,), body={}, execution_id=done["executionId"])
    call("POST", retry, (202,), body={"fromStep": "b"}, execution_id=failed["executionId"])
    call("DELETE", one, (200, 202), execution_id=done["executionId"])
    hook = "/v1/hooks/{hook_token}"
    token = hooked["hookUrl"].rsplit("/", 1)[1]
    key = {"Idempotency-Key": "same"}  # the hook token is the credential
    call("POST", hook, (202,), headers=key, body={"a": 1}, hook_token=token)
    call("POST", hook, (409,), headers=key, body={"a": 2}, hook_token=token)
    call("DELETE", item, (200,), workflow_id=hooked["id"])
    call("GET", "/v1/executions", (200,), query={"limit": 2})
    return failures


def fuzz(base_url: str, token: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [o.label for o in operations]
    failures: list[str] = []
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            failures += fuzz_operation(operation, mode, base_url, headers)[:1]
    return failures


def fuzz_operation(operation: Any, mode: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Up to EXAMPLES generated requests; a description of each one that fails a check."""
    found: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
        except (Exception, BaseExceptionGroup) as exc:  # collected: one run reports all
            found.append(f"{operation.label} [{mode.value}]: {summary(exc)}")

    try:
        call()
    except Unsatisfiable:
        pass  # e.g. no invalid request exists for an operation without parameters
    except (Exception, BaseExceptionGroup) as exc:  # a failure hypothesis re-raised
        found.append(f"{operation.label} [{mode.value}]: {summary(exc)}")
    return found


def summary(exc: BaseException) -> str:
    """The failed checks and what was received, from a schemathesis failure."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line.startswith(("- ", "Received:", "Documented:", "["))]
    return "; ".join(kept[:6]) or str(exc)[:500]
