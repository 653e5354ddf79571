"""WorkflowCache: serves only while notified, never stores a read that raced a change,
stays within its bounds."""

from __future__ import annotations

import asyncio
from typing import Any

from jobsprint.gateway.workflow_cache import WorkflowCache

Row = dict[str, Any]


def row(version: int, size: int = 10) -> Row:
    return {"current_version": version, "definition": {"steps": "x" * size}}


class Store:
    """What Postgres would answer, with a count of reads."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.reads = 0

    def loader(self, workflow_id: str) -> Any:
        async def load() -> Row | None:
            self.reads += 1
            await asyncio.sleep(0)
            return self.rows.get(workflow_id)

        return load


async def test_serves_from_memory_only_while_listening() -> None:
    cache, store = WorkflowCache(), Store()
    store.rows["wf"] = row(1)
    for _ in range(2):
        assert await cache.get("ws", "wf", store.loader("wf")) == row(1)
    assert store.reads == 2  # not listening yet: every execute reads
    cache.listening()
    for _ in range(3):
        assert await cache.get("ws", "wf", store.loader("wf")) == row(1)
    assert store.reads == 3
    cache.deaf()  # the LISTEN connection is lost: a notification could be missed
    store.rows["wf"] = row(2)
    assert await cache.get("ws", "wf", store.loader("wf")) == row(2)
    assert len(cache) == 0


async def test_a_change_evicts_only_that_workflow_of_that_workspace() -> None:
    cache, store = WorkflowCache(), Store()
    cache.listening()
    store.rows = {"a": row(1), "b": row(1)}
    await cache.get("ws", "a", store.loader("a"))
    await cache.get("ws", "b", store.loader("b"))
    store.rows = {"a": row(2), "b": row(2)}
    cache.notified("ws a")
    assert (await cache.get("ws", "a", store.loader("a")))["current_version"] == 2
    assert (await cache.get("ws", "b", store.loader("b")))["current_version"] == 1
    cache.notified("other b")  # same id in another workspace: a different key
    assert (await cache.get("ws", "b", store.loader("b")))["current_version"] == 1


async def test_a_read_in_flight_during_a_change_is_not_stored() -> None:
    cache, store = WorkflowCache(), Store()
    cache.listening()
    store.rows["wf"] = row(1)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_load() -> Row | None:
        started.set()
        await release.wait()
        return row(1)  # what the database said before the change committed

    reader = asyncio.create_task(cache.get("ws", "wf", slow_load))
    await started.wait()
    cache.changed("ws", "wf")  # the notification arrives while the read is in flight
    release.set()
    assert (await reader)["current_version"] == 1  # answered, but not kept
    store.rows["wf"] = row(2)
    assert (await cache.get("ws", "wf", store.loader("wf")))["current_version"] == 2


async def test_absent_workflows_are_not_cached() -> None:
    cache, store = WorkflowCache(), Store()
    cache.listening()
    assert await cache.get("ws", "wf", store.loader("wf")) is None
    store.rows["wf"] = row(1)  # created afterwards (creation sends no notification)
    assert await cache.get("ws", "wf", store.loader("wf")) == row(1)


async def test_bounded_by_entries_and_bytes_least_recently_used_out() -> None:
    cache, store = WorkflowCache(max_entries=3, max_bytes=16 * 1000), Store()
    cache.listening()
    for name in "abcd":
        store.rows[name] = row(1)
        await cache.get("ws", name, store.loader(name))
    assert len(cache) == 3
    reads = store.reads
    await cache.get("ws", "a", store.loader("a"))  # the oldest went first
    assert store.reads == reads + 1

    store.rows["huge"] = row(1, size=1000)  # more than a sixteenth of the byte budget
    await cache.get("ws", "huge", store.loader("huge"))
    await cache.get("ws", "huge", store.loader("huge"))
    assert store.reads == reads + 3  # never kept

    wide = WorkflowCache(max_entries=100, max_bytes=16 * 400)
    wide.listening()
    for index in range(40):
        store.rows[str(index)] = row(1, size=300)
        await wide.get("ws", str(index), store.loader(str(index)))
    assert 0 < len(wide) < 40  # the byte budget, not the entry count, bounded it
