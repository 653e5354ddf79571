"""The per-token rate limit (JOBSPRINT_RATE_LIMIT_PER_S / _BURST): past it, 429 with
Retry-After; other workspaces' tokens are not slowed down by it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.system import System
from tests.security.conftest import tenant

pytestmark = pytest.mark.e2e

RATE_PER_S = 2
BURST = 5


@pytest.fixture(scope="module")
def limited(secured: System) -> Iterator[System]:
    """A second gateway on the security system's database and topics, with a tight limit."""
    workdir = secured.workdir / "rate-limited"
    workdir.mkdir(exist_ok=True)
    gateway = System(
        bootstrap=secured.bootstrap,
        database_url=secured.database_url,
        topic_prefix=secured.topic_prefix,
        workdir=workdir,
        extra_env={
            **secured.extra_env,
            "JOBSPRINT_RATE_LIMIT_PER_S": str(RATE_PER_S),
            "JOBSPRINT_RATE_LIMIT_BURST": str(BURST),
        },
    )
    gateway.ports["metrics"] = secured.ports["metrics"]
    gateway.start("api-gateway")
    gateway.wait_ready("api-gateway")
    yield gateway
    gateway.stop_all()


async def test_past_the_limit_a_token_gets_429_with_retry_after_and_others_do_not(
    limited: System,
) -> None:
    noisy = tenant(limited)
    calm = tenant(limited)
    async with httpx.AsyncClient(base_url=limited.gateway_url, timeout=30) as client:
        burst = await asyncio.gather(
            *(client.get("/v1/executions", headers=noisy.headers) for _ in range(3 * BURST))
        )
        codes = Counter(r.status_code for r in burst)
        # while the noisy token is throttled, another workspace's token is served
        calm_answers = [
            (await client.get("/v1/executions", headers=calm.headers)).status_code
            for _ in range(BURST)
        ]
        throttled = [r for r in burst if r.status_code == 429]
        assert codes[200] <= BURST + 1 and throttled, codes
        assert set(codes) <= {200, 429}, codes
        for response in throttled:
            body = response.json()
            assert body["success"] is False and body["error"]["code"] == "rate_limited"
            retry_after = response.headers["retry-after"]
            assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
        assert calm_answers == [200] * BURST, calm_answers
        # the noisy token's own other endpoints are limited too (the limit is per token)
        other_endpoint = await client.get("/v1/workflows", headers=noisy.headers)
        assert other_endpoint.status_code == 429
        # after Retry-After, it is served again
        wait = max(int(r.headers["retry-after"]) for r in throttled)
        await asyncio.sleep(wait + 0.2)
        began = time.monotonic()
        again = await client.get("/v1/executions", headers=noisy.headers)
        assert again.status_code == 200, (again.status_code, time.monotonic() - began)
        # refused requests (no token) are not charged to anybody and are 401, not 429
        anonymous = await asyncio.gather(*(client.get("/v1/executions") for _ in range(3 * BURST)))
        assert {r.status_code for r in anonymous} == {401}
