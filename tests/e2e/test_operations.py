"""What operators scrape: every service's Prometheus /metrics shows the series ops rely on
after a short load, and the logs are JSON lines."""

from __future__ import annotations

import json

import httpx
import pytest

from .system import System
from .test_executions_api import SLOW, TWO_STEPS, create_workflow, execute, wait_status

pytestmark = pytest.mark.e2e


async def scrape(system: System, name: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{system.ports[name]}/metrics")
    assert response.status_code == 200
    return response.text


def has_sample(text: str, prefix: str) -> bool:
    return any(line.startswith(prefix) for line in text.splitlines())


async def test_every_service_exposes_its_series_after_a_short_load(
    system: System, api: httpx.AsyncClient
) -> None:
    fast = await create_workflow(api, TWO_STEPS)
    slow = await create_workflow(api, SLOW)
    for i in range(10):
        await execute(api, fast, {"inputData": {"n": i}, "options": {"waitForCompletion": True}})
    cancelled = (await execute(api, slow)).json()["data"]["executionId"]
    await wait_status(api, cancelled, "running")
    await api.post(f"/v1/executions/{cancelled}/cancel")
    await api.get("/v1/executions")

    gateway = await scrape(system, "api-gateway")
    assert has_sample(gateway, 'jobsprint_http_request_seconds_bucket{le="0.005",method="POST"')
    assert 'route="/v1/workflows/{workflow_id}/execute"' in gateway
    assert 'status="200"' in gateway and 'status="202"' in gateway
    assert has_sample(gateway, 'jobsprint_executions_requested_total{trigger="api"}')

    executors = [await scrape(system, n) for n in system.ports if n.startswith("executor")]
    joined = "\n".join(executors)
    assert has_sample(joined, 'jobsprint_executions_finished_total{status="success"}')
    assert has_sample(joined, 'jobsprint_executions_finished_total{status="cancelled"}')
    assert has_sample(joined, "jobsprint_executions_started_total")
    assert has_sample(
        joined,
        'jobsprint_step_duration_seconds_bucket{le="0.001",outcome="success",step_type="transform"}',
    )
    assert has_sample(joined, 'jobsprint_consumer_lag{consumer="executor",partition=')
    assert "jobsprint_dead_letters_total" in joined

    projector = await scrape(system, "projector")
    assert has_sample(projector, "jobsprint_projector_batch_size_count")
    assert has_sample(projector, "jobsprint_projector_batch_seconds_bucket")
    assert has_sample(projector, 'jobsprint_consumer_lag{consumer="projector",partition=')

    metrics = await scrape(system, "metrics")
    assert has_sample(metrics, 'jobsprint_consumer_lag{consumer="metrics",partition=')


def test_service_logs_are_json_lines(system: System) -> None:
    for name in system.ports:
        lines = [line for line in system.log_tail(name, 20000).splitlines() if line.strip()]
        assert lines, name
        for line in lines[-20:]:
            record = json.loads(line)
            assert {"time", "level", "service", "message"} <= set(record), (name, line)
