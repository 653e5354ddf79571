"""Dependencies failing under a running gateway: 503 with a clear error, never a 500, and
recovery without a restart."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from jobsprint.gateway.settings import GatewaySettings
from tests.integration.gateway.support import Caller, create_workflow, running

pytestmark = pytest.mark.integration


async def set_reachable(database_url: str, reachable: bool) -> None:
    """Refuse (or allow again) new connections to the database and cut the open ones."""
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    name = database_url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if reachable else "false"}'
        )
        if not reachable:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


async def test_postgres_down_answers_503_and_the_gateway_recovers(
    settings: GatewaySettings, caller: Caller, read_model: str
) -> None:
    async with running(settings) as (client, _):
        workflow = await create_workflow(client, caller)
        await set_reachable(read_model, False)
        try:
            answers = await asyncio.gather(
                *(
                    client.request(method, url, json=body, headers=caller.headers)
                    for method, url, body in (
                        ("GET", "/v1/executions", None),
                        ("GET", f"/v1/workflows/{workflow['id']}", None),
                        ("POST", f"/v1/workflows/{workflow['id']}/execute", {}),
                    )
                )
            )
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "unavailable"
                assert answer.headers["retry-after"] == "5"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "Postgres" in ready.json()["error"]["message"]
        finally:
            await set_reachable(read_model, True)
        for _ in range(100):
            answer = await client.get("/v1/executions", headers=caller.headers)
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert answer.status_code == 200
        ran = await client.post(
            f"/v1/workflows/{workflow['id']}/execute", json={}, headers=caller.headers
        )
        assert ran.status_code == 202
