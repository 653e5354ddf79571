"""Executors dying: kill -9 of random executors under 2,000 mixed executions (scenario 1),
and every executor down for 30 s while executions are accepted (scenario 2)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from jobsprint.events import ExecutionFailed, ExecutionRequested, ExecutionStarted
from tests.faults.conftest import MakeSystem
from tests.faults.support import (
    PLUS_ONE,
    StepServer,
    Supervisor,
    audit_events,
    create_workflow,
    dead_letters_of,
    gateway_client,
    kill_9,
    not_terminal,
    read_events,
    read_model_duplicates,
    read_model_statuses,
    submit_many,
    wait_terminal,
    write_figures,
)

pytestmark = pytest.mark.faults

EXECUTIONS = 2000
MAX_KILLS = 12
KILL_INTERVAL_S = (2.0, 4.0)
EXECUTORS = ["executor-1", "executor-2", "executor-3"]


def mixed_workflows(server_url: str) -> dict[str, dict[str, Any]]:
    """Five kinds of workflow and, for each, what an execution with input `i` must end as."""
    return {
        "transform": {
            "name": "Transform",
            "steps": [
                {
                    "id": "a",
                    "name": "A",
                    "type": "transform",
                    "params": {"output": {"n": "{{ input.i }}"}},
                },
                {
                    "id": "b",
                    "name": "B",
                    "type": "transform",
                    "params": {"output": {"n": "{{ steps.a.output.n * 2 }}"}},
                },
            ],
        },
        "delay": {
            "name": "Delay",
            "steps": [
                {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{input.i}}"}},
                {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 0.5}},
                {
                    "id": "b",
                    "name": "B",
                    "type": "transform",
                    "params": {"output": "{{ steps.a.output * 10 }}"},
                },
            ],
        },
        "http": {
            "name": "Http",
            "steps": [
                {
                    "id": "call",
                    "name": "Call",
                    "type": "http",
                    "params": {"url": server_url + "/echo?i={{ input.i }}", "timeoutSeconds": 10},
                    "retry": {"maxAttempts": 3, "backoffSeconds": 0.2},
                },
                {
                    "id": "pick",
                    "name": "Pick",
                    "type": "transform",
                    "params": {"output": "{{ steps.call.output.body.i }}"},
                },
            ],
        },
        "flaky": {
            "name": "Flaky http, retried",
            "steps": [
                {
                    "id": "call",
                    "name": "Call",
                    "type": "http",
                    "params": {
                        "url": server_url + "/flaky?id={{ execution.id }}",
                        "timeoutSeconds": 10,
                    },
                    "retry": {"maxAttempts": 3, "backoffSeconds": 0.2},
                },
                {
                    "id": "done",
                    "name": "Done",
                    "type": "transform",
                    "params": {"output": "{{ steps.call.output.body.ok }}"},
                },
            ],
        },
        "fail": {
            "name": "Fails on purpose",
            "steps": [
                {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{input.i}}"}},
                {
                    "id": "boom",
                    "name": "Boom",
                    "type": "fail",
                    "params": {"message": "planned failure", "code": "planned"},
                },
            ],
        },
    }


def expected_end(kind: str, i: int) -> tuple[str, Any]:
    """(status, output) — or (status, error code) for the failing kind."""
    return {
        "transform": ("success", {"n": i * 2}),
        "delay": ("success", i * 10),
        "http": ("success", i),
        "flaky": ("success", True),
        "fail": ("error", "planned"),
    }[kind]


def wrong_ends(
    rows: dict[str, dict[str, Any]], plan: dict[str, tuple[str, int]]
) -> list[tuple[str, str, Any, Any]]:
    wrong = []
    for execution_id, (kind, i) in plan.items():
        row = rows.get(execution_id)
        status, value = expected_end(kind, i)
        if row is None:
            wrong.append((execution_id, kind, (status, value), None))
            continue
        got = row["output"] if status == "success" else (row["error"] or {}).get("code")
        if row["status"] != status or got != value:
            wrong.append((execution_id, kind, (status, value), (row["status"], got)))
    return wrong


@pytest.mark.timeout(480)
async def test_kill_9_of_random_executors_under_2000_mixed_executions(
    make_system: MakeSystem,
) -> None:
    with StepServer() as server:
        system = await make_system(services=["projector", *EXECUTORS, "api-gateway"])
        # the orchestrator: a killed executor (or one that stops itself) is started again
        supervisor = Supervisor(system, EXECUTORS)
        supervisor.start()
        token = system.create_token("ws-kill-executors")
        try:
            async with gateway_client(system, token) as client:
                definitions = mixed_workflows(server.url)
                workflow_ids = {
                    kind: await create_workflow(client, d) for kind, d in definitions.items()
                }
                kinds = list(definitions)
                requests = [
                    (workflow_ids[kinds[i % len(kinds)]], {"inputData": {"i": i}})
                    for i in range(EXECUTIONS)
                ]
                began = time.monotonic()
                retried: Counter[str] = Counter()
                submitting = asyncio.create_task(submit_many(client, requests, retried=retried))
                kills: list[tuple[str, float]] = []
                while len(kills) < MAX_KILLS:
                    await asyncio.sleep(random.uniform(*KILL_INTERVAL_S))
                    if submitting.done():
                        accepted = [
                            r.json()["data"]["executionId"]
                            for r in submitting.result()
                            if r.is_success
                        ]
                        rows = await asyncio.to_thread(
                            read_model_statuses, system.database_url, accepted
                        )
                        if not not_terminal(rows, accepted):
                            break  # nothing left to interrupt
                    alive = [n for n in EXECUTORS if n in system.processes]
                    if alive:
                        victim = random.choice(alive)
                        kill_9(system, victim)
                        kills.append((victim, round(time.monotonic() - began, 1)))
                last_kill = time.monotonic()
                answers = await submitting
            assert [r.status_code for r in answers] == [202] * EXECUTIONS, Counter(
                r.status_code for r in answers
            )
            ids = [r.json()["data"]["executionId"] for r in answers]
            plan = {e: (kinds[i % len(kinds)], i) for i, e in enumerate(ids)}
            rows = await wait_terminal(system.database_url, ids, timeout_s=120, strict=False)
            recovered = time.monotonic() - last_kill
        finally:
            await supervisor.stop()
        stuck = not_terminal(rows, ids)
        wrong = wrong_ends(rows, plan)
        events = await read_events(system.bootstrap, f"{system.topic_prefix}.events")
        audit = audit_events(events, ids)
        doubled = await asyncio.to_thread(read_model_duplicates, system.database_url, ids)
        unprojected = [
            e
            for e in ids
            if e in rows and rows[e]["last_seq"] != len(audit.by_execution.get(e, []))
        ]
        dead = [d for d in await dead_letters_of(system) if d.consumer == "projector"]
        http_reruns = server.hits["/echo"] - EXECUTIONS // len(kinds)

    write_figures(
        "1-kill-executors",
        {
            "executions": len(ids),
            "by_kind": dict(Counter(kind for kind, _ in plan.values())),
            "statuses": dict(Counter(r["status"] for r in rows.values())),
            "kills": len(kills),
            "kill_times_s": kills,
            "restarts": dict(supervisor.restarts),
            "exits_not_killed": len(system.exits),
            "client_retries_after_connection_errors": dict(retried),
            "events": audit.events,
            "lost": len(set(stuck) | {w[0] for w in wrong}) or audit.lost,
            "lost_in_events_topic": audit.lost,
            "not_terminal_in_read_model": len(stuck),
            "projector_dead_letters": len(dead),
            "duplicated": audit.duplicated + doubled["count"],
            "steps_run_again_http": http_reruns,
            "time_to_recover_s": None if stuck else round(recovered, 1),
            "duration_s": round(time.monotonic() - began, 1),
        },
    )
    assert not stuck, (
        f"{len(stuck)} of {len(ids)} executions never reached a terminal state in the read "
        f"model; events topic: {audit.problems()}; projector dead letters: {len(dead)}, e.g. "
        f"{[d.error for d in dead[:2]]}"
    )
    assert len(kills) >= 3, f"too few kills landed while executions ran: {kills}"
    assert not wrong, f"{len(wrong)} executions did not end as their workflow must: {wrong[:5]}"
    assert not audit.problems(), audit.problems()
    assert not dead, [d.error for d in dead[:5]]
    assert doubled["count"] == 0, doubled
    assert not unprojected, f"read model last_seq differs from the events: {unprojected[:5]}"


OUTAGE_S = 30.0
DURING_OUTAGE = 200


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        query = {"limit": 100, **params, **({"after": cursor} if cursor else {})}
        response = await client.get("/v1/executions", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found += [item["id"] for item in body["data"]]
        cursor = body["pagination"]["nextCursor"]
        if not body["pagination"]["hasMore"]:
            return found


@pytest.mark.timeout(300)
async def test_every_executor_down_for_30s_executions_wait_pending_then_run_once(
    make_system: MakeSystem,
) -> None:
    executors = ["executor-1", "executor-2"]
    system = await make_system(services=["projector", *executors, "api-gateway"])
    token = system.create_token("ws-no-executors")
    async with gateway_client(system, token) as client:
        workflow_id = await create_workflow(client, PLUS_ONE)
        warm = await client.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"inputData": {"i": -1}, "options": {"waitForCompletion": True}},
        )
        assert warm.status_code == 200 and warm.json()["data"]["status"] == "success", warm.text

        for name in executors:
            kill_9(system, name)
        down_at = time.monotonic()
        answers: list[httpx.Response] = []
        spacing = (OUTAGE_S - 6) / DURING_OUTAGE
        for i in range(DURING_OUTAGE):
            answers.append(
                await client.post(
                    f"/v1/workflows/{workflow_id}/execute", json={"inputData": {"i": i}}
                )
            )
            await asyncio.sleep(max(0.0, down_at + (i + 1) * spacing - time.monotonic()))
        assert [a.status_code for a in answers] == [202] * DURING_OUTAGE, Counter(
            a.status_code for a in answers
        )
        ids = [a.json()["data"]["executionId"] for a in answers]

        # near the end of the outage: every one of them is still pending
        await asyncio.sleep(max(0.0, down_at + OUTAGE_S - 3 - time.monotonic()))
        gate = asyncio.Semaphore(20)

        async def status_of(execution_id: str) -> str:
            async with gate:
                response = await client.get(f"/v1/executions/{execution_id}")
                assert response.status_code == 200, response.text
                return str(response.json()["data"]["status"])

        seen = Counter(await asyncio.gather(*(status_of(e) for e in ids)))
        listed_pending = set(await list_all(client, status="pending"))
        projected_early = await asyncio.to_thread(read_model_statuses, system.database_url, ids)
        await asyncio.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        outage = time.monotonic() - down_at
        returned_at = datetime.now(UTC)
        back = time.monotonic()
        await asyncio.to_thread(system.start_services, executors)

        rows = await wait_terminal(system.database_url, ids, timeout_s=120, poll_s=0.5)
        drained = time.monotonic() - back
        events = await read_events(system.bootstrap, f"{system.topic_prefix}.events")
        audit = audit_events(events, ids)
        wrong = [e for i, e in enumerate(ids) if rows[e]["output"] != i + 1]
        started_early = [e for e in ids if rows[e]["started_at"] < returned_at]
        ours = [e for e in events if e.execution_id in set(ids)]
        requested = Counter(e.execution_id for e in ours if isinstance(e.data, ExecutionRequested))
        started = Counter(e.execution_id for e in ours if isinstance(e.data, ExecutionStarted))
        failed = [e.execution_id for e in ours if isinstance(e.data, ExecutionFailed)]

    write_figures(
        "2-executors-down",
        {
            "executions_accepted_during_outage": len(ids),
            "outage_s": round(outage, 1),
            "status_seen_near_end_of_outage": dict(seen),
            "listed_as_pending": len(listed_pending & set(ids)),
            "projected_during_outage": len(projected_early),
            "lost": len(audit.missing) + len(audit.not_finished) + len(wrong),
            "duplicated": audit.duplicated + sum(c - 1 for c in started.values() if c > 1),
            "time_to_drain_after_return_s": round(drained, 1),
        },
    )
    assert seen == {"pending": len(ids)}, seen
    assert not projected_early, "executions were projected while no executor ran"
    assert not wrong and not failed, (wrong[:5], failed[:5])
    assert not audit.problems(), audit.problems()
    assert set(requested) == set(ids) and set(requested.values()) == {1}
    assert set(started) == set(ids) and set(started.values()) == {1}
    assert not started_early, f"{len(started_early)} started before the executors came back"
    missing_from_list = set(ids) - listed_pending
    assert not missing_from_list, (
        f"GET /v1/executions?status=pending listed {len(listed_pending & set(ids))} of the "
        f"{len(ids)} pending executions"
    )


@pytest.mark.timeout(60)
async def test_a_partition_released_while_its_commit_is_in_flight_loses_no_event(
    make_system: MakeSystem,
) -> None:
    """The deterministic form of what scenario 1 hits at random: a rebalance takes a
    partition away (PartitionWorker.stop) while its commit loop is inside a Kafka
    transaction. What that transaction carried must be committed or carried over, never
    dropped while later events of the same executions are committed."""
    from jobsprint.events import LogRecorded, Topics, decode
    from jobsprint.executor.partition import PartitionWorker
    from jobsprint.executor.state import ExecutionState
    from jobsprint.executor.steps import StepEnvironment
    from jobsprint.runtime.kafka import make_producer
    from tests.faults.support import read_topic

    system = await make_system(services=[], partitions=1)
    topics = Topics(system.topic_prefix)
    producer = make_producer(
        system.bootstrap, client_id="faults", transactional_id=f"{topics.prefix}.executor.p0"
    )
    await producer.start()
    send = producer.send

    async def slow_send(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)  # a slow broker: the transaction stays open a while
        return await send(*args, **kwargs)

    producer.send = slow_send  # type: ignore[method-assign]
    async with httpx.AsyncClient() as http:
        worker = PartitionWorker(0, topics, producer, StepEnvironment(http, [], 1), 0.005)
        worker.start([])
        state = ExecutionState(
            execution_id="exec_inflight",
            workspace_id="ws",
            correlation_id="exec_inflight",
            workflow_id="wf",
            workflow_name="w",
            workflow_version=1,
            workflow={"name": "w", "steps": []},
            input={},
            triggered_by="api",
            timeout_s=30,
            requested_at=datetime.now(UTC),
        )
        worker.outbox.emit(
            state, ExecutionRequested(workflow_id="wf", workflow_name="w", workflow_version=1)
        )
        for i in range(3):
            worker.outbox.emit(state, LogRecorded(message=f"first {i}"))
        await asyncio.sleep(0.1)  # the commit loop is inside the transaction now
        for i in range(3):
            worker.outbox.emit(state, LogRecorded(message=f"second {i}"))
        await worker.stop()  # what a rebalance does to a revoked partition
    committed = [decode(r.value).seq for r in await read_topic(system.bootstrap, topics.events)]
    dropped = sorted(set(range(1, max(committed, default=0) + 1)) - set(committed))
    assert not dropped, f"committed seqs {committed}, but seqs {dropped} were dropped"
