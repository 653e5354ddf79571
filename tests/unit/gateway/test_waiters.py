"""ExecutionWaiters.wait_for: checks after registering, wakes on notifications, and with an
`expect`ed registration skips the first check (nothing can have finished before)."""

from __future__ import annotations

import asyncio

import pytest

from jobsprint.gateway.waiters import ExecutionWaiters

pytestmark = pytest.mark.unit


class Finish:
    """A check that finds the execution terminal once `done` is set, counting its reads."""

    def __init__(self) -> None:
        self.done = False
        self.reads = 0

    async def __call__(self) -> str | None:
        self.reads += 1
        return "row" if self.done else None


def waiters(poll_s: float = 5.0) -> ExecutionWaiters:
    return ExecutionWaiters("never connected", poll_s=poll_s)  # not started: no LISTEN


async def test_a_wait_reads_once_then_once_per_notification() -> None:
    w, check = waiters(), Finish()
    waiting = asyncio.create_task(w.wait_for("e1", check, 5))
    await asyncio.sleep(0.01)
    assert check.reads == 1  # registered, then read: a finish before it is not missed
    w._dispatch("e2 success")  # another execution: no read
    await asyncio.sleep(0.01)
    assert check.reads == 1
    check.done = True
    w._dispatch("e1 success")
    assert await asyncio.wait_for(waiting, 1) == "row"
    assert check.reads == 2
    assert not w._waiting  # nothing left registered


async def test_an_expected_wait_skips_the_first_read() -> None:
    w, check = waiters(), Finish()
    expected = w.expect("e1")
    check.done = True  # a read now would answer at once
    waiting = asyncio.create_task(w.wait_for("e1", check, 5, expected=expected))
    await asyncio.sleep(0.05)
    assert check.reads == 0 and not waiting.done()
    w._dispatch("e1 success")
    assert await asyncio.wait_for(waiting, 1) == "row"
    assert check.reads == 1
    assert not w._waiting


async def test_a_notification_before_the_wait_begins_is_kept_by_expect() -> None:
    w, check = waiters(), Finish()
    expected = w.expect("e1")
    check.done = True
    w._dispatch("e1 success")  # finished while the command was still being sent
    assert await asyncio.wait_for(w.wait_for("e1", check, 5, expected=expected), 1) == "row"


async def test_an_expected_wait_still_polls_and_times_out() -> None:
    w, check = waiters(poll_s=0.05), Finish()
    expected = w.expect("e1")
    assert await w.wait_for("e1", check, 0.2, expected=expected) is None
    assert 2 <= check.reads <= 5  # re-read every poll_s without notifications
    assert not w._waiting


async def test_forget_drops_an_unused_registration() -> None:
    w = waiters()
    first, second = w.expect("e1"), w.expect("e1")
    w.forget("e1", first)
    assert w._waiting["e1"] == {second}
    w.forget("e1", second)
    assert not w._waiting
