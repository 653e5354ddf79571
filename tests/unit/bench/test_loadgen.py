"""The open-loop schedule: requests go out at their due times whatever the earlier ones do,
and latency counts from the due time."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import Outcome, open_loop

pytestmark = pytest.mark.unit


async def test_requests_are_issued_on_schedule_even_when_responses_are_slow() -> None:
    async def slow(outcome: Outcome) -> None:
        await asyncio.sleep(0.2)  # far longer than the 10 ms interval: a closed loop would stall

    run = await open_loop(100, 0.5, slow)
    assert run.offered == 50
    sent = [o.sent - run.started for o in run.outcomes]
    assert sent[-1] == pytest.approx(0.49, abs=0.05)
    assert run.achieved_rate == pytest.approx(100, rel=0.05)
    assert all(o.latency_ms >= 199 for o in run.outcomes)


async def test_failures_and_stragglers_are_recorded_not_dropped() -> None:
    async def flaky(outcome: Outcome) -> None:
        if outcome.index % 5 == 0:
            raise RuntimeError("HTTP 503")
        if outcome.index == 3:
            await asyncio.sleep(5)

    run = await open_loop(200, 0.1, flaky, grace_s=0.2)
    kinds = run.error_kinds()
    assert kinds["RuntimeError: HTTP 503"] == 4
    assert kinds["cut after the run"] == 1
    assert len(run.ok()) == 15
