"""Two projectors in one consumer group: partitions move between them while events flow
(one joins, then the other leaves), and the read model still equals a rebuild."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from jobsprint.events import Topics
from jobsprint.projector.compare import compare_schemas
from jobsprint.projector.rebuild import rebuild
from jobsprint.projector.settings import ProjectorSettings

pytestmark = pytest.mark.integration


async def test_partitions_move_between_projectors_without_loss_or_doubles(
    settings: ProjectorSettings,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    run_projector: Any,
    caught_up: Any,
    stored_checkpoints: Any,
) -> None:
    await publisher.send(make_workload(300))
    async with run_projector(settings) as first:
        async with asyncio.timeout(20):
            while not await stored_checkpoints(database, topics.events):
                await asyncio.sleep(0.05)
        async with run_projector(settings) as second:  # joins: the group rebalances
            await publisher.send(make_workload(300))
            await asyncio.sleep(4)  # long enough for the rebalance to happen mid-stream
            await publisher.send(make_workload(300))
            await caught_up(database, topics.events, publisher.last_offsets, task=first.task)
            await first.stop()  # leaves: the group rebalances again
            await publisher.send(make_workload(300))
            # only `second` is left: it must take over every partition and catch up
            await caught_up(database, topics.events, publisher.last_offsets, task=second.task)

    await rebuild(settings, "rebuild_group")
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        same, report = await compare_schemas(conn, "public", "rebuild_group")
        assert same, "\n".join(report)
        cur = await conn.execute("SELECT count(*) FROM executions")
        assert await cur.fetchone() == (4 * 270,)
