"""Read models that crash: the projector killed mid-batch again and again (scenario 4) and
the metrics loader killed again and again (scenario 5). Both must end exactly where a calm
run would have."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import httpx
import psycopg
import pytest

from jobsprint.projector.compare import COMPARED_TABLES
from tests.faults.conftest import MakeSystem
from tests.faults.support import (
    FaultSystem,
    Supervisor,
    create_workflow,
    gateway_client,
    kill_9,
    last_offsets,
    not_terminal,
    submit_many,
    wait_terminal,
    write_figures,
)
from tests.faults.test_infrastructure_outages import rebuild_and_compare

pytestmark = pytest.mark.faults

CHATTY: dict[str, Any] = {
    "name": "Many events per execution",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {
            "id": "note",
            "name": "Note",
            "type": "log",
            "params": {"message": "working on {{ input.i }}", "data": {"i": "{{ input.i }}"}},
        },
        {"id": "gate", "name": "Gate", "type": "condition", "params": {"if": "input.ok"}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": {"double": "{{ steps.a.output * 2 }}", "tag": "x"}},
        },
        {"id": "c", "name": "C", "type": "transform", "params": {"output": "{{ steps.b.output }}"}},
    ],
}
FAILING: dict[str, Any] = {
    "name": "Fails after a while",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 0.1}},
        {"id": "boom", "name": "Boom", "type": "fail", "params": {"code": "planned"}},
    ],
}
LONG: dict[str, Any] = {
    "name": "Waits to be cancelled",
    "steps": [{"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 60}}],
}


def mixed_requests(ids: dict[str, str], count: int) -> list[tuple[str, dict[str, Any]]]:
    requests = []
    for i in range(count):
        if i % 4 == 3:
            requests.append((ids["failing"], {"inputData": {"i": i}}))
        else:
            requests.append((ids["chatty"], {"inputData": {"i": i, "ok": i % 4 != 2}}))
    return requests


async def some_cancelled_and_deleted(
    client: httpx.AsyncClient, long_id: str, finished: list[str]
) -> tuple[list[str], list[str]]:
    """Cancel a few running executions and delete a few finished ones, so the replay has
    every kind of event."""
    running = [
        (await client.post(f"/v1/workflows/{long_id}/execute", json={})).json()["data"][
            "executionId"
        ]
        for _ in range(10)
    ]
    await asyncio.sleep(2)
    for execution_id in running:
        await client.post(f"/v1/executions/{execution_id}/cancel")
    deleted = random.sample(finished, 10)
    for execution_id in deleted:
        response = await client.delete(f"/v1/executions/{execution_id}")
        assert response.status_code in (200, 202), response.text
    return running, deleted


def checkpoints(database_url: str, topic: str) -> dict[int, int]:
    with psycopg.connect(database_url) as conn:
        return dict(
            conn.execute(
                "SELECT partition, next_offset FROM projector_checkpoints WHERE topic = %s",
                (topic,),
            ).fetchall()
        )


async def wait_caught_up(system: FaultSystem, timeout_s: float) -> bool:
    """True once the projector's stored checkpoints reach the last committed event."""
    topic = f"{system.topic_prefix}.events"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        wanted = await last_offsets(system.bootstrap, topic)
        stored = await asyncio.to_thread(checkpoints, system.database_url, topic)
        if all(stored.get(p, 0) >= o for p, o in wanted.items()):
            return True
        await asyncio.sleep(1)
    return False


def rollbacks(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0


def differing_rows(database_url: str, live: str, rebuilt: str) -> dict[str, int]:
    """Row-by-row: rows of each table that one schema has and the other has not."""
    found = {}
    with psycopg.connect(database_url) as conn:
        for table in COMPARED_TABLES:
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM (SELECT * FROM {live}.{table}"
                f" EXCEPT ALL SELECT * FROM {rebuilt}.{table}) a)"
                f" + (SELECT count(*) FROM (SELECT * FROM {rebuilt}.{table}"
                f" EXCEPT ALL SELECT * FROM {live}.{table}) b)"
            ).fetchone()
            assert row is not None
            found[table] = int(row[0])
    return found


LIVE_KILLS = 5
CATCH_UP_KILLS = 5


def progress(database_url: str) -> int:
    """How far the projector got: the sum of its stored positions."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM projector_checkpoints")
        found = row.fetchone()
        return int(found[0]) if found else 0


async def backlog_settled(
    system: FaultSystem, quiet_s: float = 2.0, timeout_s: float = 120
) -> None:
    """Wait until the executors stop appending events (the backlog is complete)."""
    topic = f"{system.topic_prefix}.events"
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = await last_offsets(system.bootstrap, topic)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        await asyncio.sleep(0.5)


@pytest.mark.timeout(360)
async def test_projector_kill_9_mid_batch_repeatedly_matches_a_rebuild(
    make_system: MakeSystem,
) -> None:
    system = await make_system(
        services=["projector", "executor-1", "executor-2", "api-gateway"],
        partitions=6,
        # small batches: a catch-up is many transactions, so a kill lands inside one
        extra_env={"JOBSPRINT_PROJECTOR_BATCH_MAX": "250"},
    )
    supervisor = Supervisor(system, ["projector"])
    supervisor.start()
    token = system.create_token("ws-projector-kills")
    kills: list[tuple[str, float]] = []
    rolled_back_before = await asyncio.to_thread(rollbacks, system.database_url)
    began = time.monotonic()
    try:
        async with gateway_client(system, token) as client:
            ids = {
                "chatty": await create_workflow(client, CHATTY),
                "failing": await create_workflow(client, FAILING),
                "long": await create_workflow(client, LONG),
            }
            # 1. live load, the projector killed every 1-2.5 s
            submitting = asyncio.create_task(submit_many(client, mixed_requests(ids, 600)))
            while not submitting.done() or len(kills) < LIVE_KILLS:
                await asyncio.sleep(random.uniform(1.0, 2.5))
                kill_9(system, "projector")
                kills.append(("live", round(time.monotonic() - began, 1)))
            first = [r.json()["data"]["executionId"] for r in await submitting]
            # 2. a backlog, then the projector killed again and again while it catches up
            supervisor.hold("projector")
            kill_9(system, "projector")
            backlog = await submit_many(client, mixed_requests(ids, 1000))
            second = [r.json()["data"]["executionId"] for r in backlog]
            await backlog_settled(system)
            supervisor.resume("projector")
            for _ in range(CATCH_UP_KILLS):
                before = await asyncio.to_thread(progress, system.database_url)
                deadline = time.monotonic() + 15
                while await asyncio.to_thread(progress, system.database_url) == before:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                else:
                    await asyncio.sleep(random.uniform(0.0, 0.3))  # inside the catch-up
                    kill_9(system, "projector")
                    kills.append(("catch-up", round(time.monotonic() - began, 1)))
                    continue
                break  # caught up already: nothing left to interrupt
            last_kill = time.monotonic()
            executions = first + second
            rows = await wait_terminal(system.database_url, executions, 120, strict=False)
            cancelled, deleted = await some_cancelled_and_deleted(
                client, ids["long"], [e for e in executions if e in rows]
            )
            caught_up = await wait_caught_up(system, 60)
            recovered = time.monotonic() - last_kill
    finally:
        await supervisor.stop()
    rolled_back = await asyncio.to_thread(rollbacks, system.database_url) - rolled_back_before
    stuck = not_terminal(rows, executions)
    compared = await asyncio.to_thread(rebuild_and_compare, system)
    differing = await asyncio.to_thread(differing_rows, system.database_url, "public", "rebuilt")
    write_figures(
        "4-projector-kills",
        {
            "executions": len(executions) + len(cancelled),
            "statuses": dict(Counter(r["status"] for r in rows.values())),
            "cancelled": len(cancelled),
            "deleted": len(deleted),
            "kills": len(kills),
            "kill_times_s": kills,
            "transactions_rolled_back": rolled_back,
            "lost": len(stuck),
            "differing_rows_vs_rebuild": differing,
            "duplicated": sum(differing.values()),
            "time_to_recover_s": round(recovered, 1) if caught_up else None,
            "duration_s": round(time.monotonic() - began, 1),
        },
    )
    assert len([k for k in kills if k[0] == "catch-up"]) >= CATCH_UP_KILLS // 2, kills
    assert not stuck, f"{len(stuck)} executions never projected as terminal"
    assert caught_up, "the projector did not reach the end of the events topic"
    assert compared.returncode == 0, compared.stdout + compared.stderr[-2000:]
    assert differing == dict.fromkeys(COMPARED_TABLES, 0), differing


METRICS_KILLS = 8


def postgres_counts(database_url: str, workspace_id: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(
            conn.execute(
                "SELECT status, count(*) FROM executions WHERE workspace_id = %s GROUP BY 1",
                (workspace_id,),
            ).fetchall()
        )


def postgres_step_count(database_url: str, workspace_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM execution_steps s JOIN executions e ON e.id = s.execution_id"
            " WHERE e.workspace_id = %s",
            (workspace_id,),
        ).fetchone()
        assert row is not None
        return int(row[0])


def workspace_id_of(database_url: str, name: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return str(row[0])


async def clickhouse(system: FaultSystem, sql: str) -> list[list[Any]]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"http://127.0.0.1:{system.ports['metrics']}/v1/sql", json={"sql": sql}
        )
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["rows"])


async def clickhouse_counts(system: FaultSystem, workspace_id: str) -> dict[str, Any]:
    by_status = await clickhouse(
        system,
        "SELECT status, count() FROM executions FINAL"
        f" WHERE workspace_id = '{workspace_id}' GROUP BY status",
    )
    [[rows, distinct]] = await clickhouse(
        system,
        "SELECT count(), uniqExact(execution_id) FROM executions FINAL"
        f" WHERE workspace_id = '{workspace_id}'",
    )
    [[steps]] = await clickhouse(
        system, f"SELECT count() FROM steps FINAL WHERE workspace_id = '{workspace_id}'"
    )
    return {
        "by_status": {str(s): int(c) for s, c in by_status},
        "rows": int(rows),
        "distinct": int(distinct),
        "steps": int(steps),
    }


@pytest.mark.timeout(360)
async def test_metrics_loader_kill_9_repeatedly_counts_match_postgres(
    make_system: MakeSystem,
) -> None:
    began = time.monotonic()
    services = ["metrics", "projector", "executor-1", "executor-2", "api-gateway"]
    system = await make_system(services=services, partitions=6)
    supervisor = Supervisor(system, ["metrics"])
    supervisor.start()
    workspace = "ws-metrics-kills"
    token = system.create_token(workspace)
    workspace_id = workspace_id_of(system.database_url, workspace)
    kills: list[float] = []
    try:
        async with gateway_client(system, token) as client:
            ids = {
                "chatty": await create_workflow(client, CHATTY),
                "failing": await create_workflow(client, FAILING),
                "long": await create_workflow(client, LONG),
            }
            submitting = asyncio.create_task(submit_many(client, mixed_requests(ids, 1200)))
            while not submitting.done() or len(kills) < METRICS_KILLS:
                await asyncio.sleep(random.uniform(2.0, 4.0))  # chDB takes ~1-2 s to open
                kill_9(system, "metrics")
                kills.append(round(time.monotonic() - began, 1))
                if len(kills) >= 3 * METRICS_KILLS:
                    break
            last_kill = time.monotonic()
            executions = [r.json()["data"]["executionId"] for r in await submitting]
            rows = await wait_terminal(system.database_url, executions, 120, strict=False)
            cancelled, deleted = await some_cancelled_and_deleted(
                client, ids["long"], [e for e in executions if e in rows]
            )
            await wait_terminal(system.database_url, cancelled, 30, strict=False)
            await asyncio.to_thread(system.wait_ready, "metrics", 60)
            deadline = time.monotonic() + 90
            while True:
                pg = await asyncio.to_thread(postgres_counts, system.database_url, workspace_id)
                pg_steps = await asyncio.to_thread(
                    postgres_step_count, system.database_url, workspace_id
                )
                ch = await clickhouse_counts(system, workspace_id)
                api = (await client.get("/v1/executions/metrics")).json()
                if (ch["by_status"], ch["steps"]) == (pg, pg_steps) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            recovered = time.monotonic() - last_kill
    finally:
        await supervisor.stop()
    finished = pg.get("success", 0) + pg.get("error", 0)
    write_figures(
        "5-metrics-kills",
        {
            "executions": len(executions) + len(cancelled),
            "deleted": len(deleted),
            "kills": len(kills),
            "kill_times_s": kills,
            "restarts": dict(supervisor.restarts),
            "postgres_by_status": pg,
            "clickhouse_by_status": ch["by_status"],
            "clickhouse_rows_vs_distinct": [ch["rows"], ch["distinct"]],
            "steps_postgres_vs_clickhouse": [pg_steps, ch["steps"]],
            "api_totals": {
                k: api.get("data", {}).get(k)
                for k in ("totalExecutions", "successfulExecutions", "failedExecutions")
            },
            "lost": max(0, sum(pg.values()) - sum(ch["by_status"].values())),
            "duplicated": max(0, sum(ch["by_status"].values()) - sum(pg.values()))
            + ch["rows"]
            - ch["distinct"],
            "time_to_recover_s": round(recovered, 1),
            "duration_s": round(time.monotonic() - began, 1),
        },
    )
    assert len(kills) >= METRICS_KILLS
    assert not not_terminal(rows, executions)
    assert ch["by_status"] == pg, (ch["by_status"], pg)
    assert ch["rows"] == ch["distinct"]
    assert ch["steps"] == pg_steps, (ch["steps"], pg_steps)
    assert api["success"] is True, api
    assert api["data"]["totalExecutions"] == finished, (api["data"], pg)
    assert api["data"]["successfulExecutions"] == pg.get("success", 0)
    assert api["data"]["failedExecutions"] == pg.get("error", 0)
