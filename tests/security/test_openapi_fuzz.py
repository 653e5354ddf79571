"""Schemathesis against the gateway's own OpenAPI document (`/openapi.json`), with a valid
token: generated requests — valid and invalid ones — never get a 5xx, and every answer
matches the document (status code, content type, body schema). Bounded: a few examples per
operation and mode."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.system import System
from tests.security.conftest import client_for, create_workflow, tenant

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (it belongs in the dev dependency group)"
)
import hypothesis.configuration  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
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
