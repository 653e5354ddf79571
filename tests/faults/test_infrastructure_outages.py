"""The broker stopped and restarted under load (scenario 3), and Postgres stopped for 20 s
(scenario 6). Both on a Kafka and a Postgres of their own (`own_infra`): other test runs
share the default ones."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from jobsprint.events import ExecutionRequested, ExecutionSucceeded
from tests.faults.conftest import MakeSystem, OwnInfra
from tests.faults.support import (
    PLUS_ONE,
    FaultSystem,
    Supervisor,
    audit_events,
    create_workflow,
    dead_letters_of,
    gateway_client,
    not_terminal,
    read_events,
    wait_terminal,
    write_figures,
)

pytestmark = pytest.mark.faults

SERVICES = ["projector", "executor-1", "executor-2", "api-gateway"]


@dataclass
class Answer:
    i: int
    sent: float  # monotonic
    answered: float
    status: int | None  # None: no HTTP answer (transport error)
    retry_after: str | None
    execution_id: str | None
    error: str | None = None


async def execute_once(
    client: httpx.AsyncClient, workflow_id: str, i: int, answers: list[Answer]
) -> None:
    sent = time.monotonic()
    try:
        response = await client.post(
            f"/v1/workflows/{workflow_id}/execute", json={"inputData": {"i": i}}, timeout=90
        )
    except httpx.HTTPError as exc:
        answers.append(Answer(i, sent, time.monotonic(), None, None, None, repr(exc)))
        return
    execution_id = response.json()["data"]["executionId"] if response.is_success else None
    answers.append(
        Answer(
            i,
            sent,
            time.monotonic(),
            response.status_code,
            response.headers.get("retry-after"),
            execution_id,
            None if response.is_success else response.text[:300],
        )
    )


async def steady_load(
    client: httpx.AsyncClient,
    workflow_id: str,
    answers: list[Answer],
    stop: asyncio.Event,
    every_s: float,
) -> None:
    """One execute every `every_s`, each in its own task: a slow answer does not delay the
    next request."""
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while not stop.is_set():
        task = asyncio.create_task(execute_once(client, workflow_id, i, answers))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        await asyncio.sleep(every_s)
    if tasks:
        await asyncio.wait(tasks)


def check_outputs(rows: dict[str, dict[str, Any]], by_id: dict[str, int]) -> list[str]:
    return [e for e, i in by_id.items() if rows.get(e, {}).get("output") != i + 1]


BROKER_DOWN_S = 20.0


@pytest.mark.timeout(480)
async def test_broker_stopped_and_restarted_during_load(
    own_infra_up: OwnInfra, make_system: MakeSystem
) -> None:
    own = own_infra_up
    system = await make_system(services=SERVICES, partitions=3, on=own.infra)
    supervisor = Supervisor(system, SERVICES)
    supervisor.start()
    token = system.create_token("ws-broker-outage")
    answers: list[Answer] = []
    try:
        async with gateway_client(system, token) as client:
            workflow_id = await create_workflow(client, PLUS_ONE)
            stop = asyncio.Event()
            load = asyncio.create_task(steady_load(client, workflow_id, answers, stop, 0.1))
            await asyncio.sleep(8)
            stopping = time.monotonic()
            await asyncio.to_thread(own.stop_kafka)
            down_at = time.monotonic()
            await asyncio.sleep(BROKER_DOWN_S)
            await asyncio.to_thread(own.start_kafka)
            up_at = time.monotonic()
            await asyncio.sleep(20)  # load goes on while everything reconnects
            stop.set()
            await load
            accepted = {a.execution_id: a.i for a in answers if a.execution_id}
            rows = await wait_terminal(
                system.database_url, list(accepted), timeout_s=180, strict=False
            )
            recovered = time.monotonic() - up_at
            readyz = await client.get("/readyz")
    finally:
        await supervisor.stop()
    stuck = not_terminal(rows, list(accepted))
    wrong = check_outputs(rows, accepted)
    events = await read_events(system.bootstrap, f"{system.topic_prefix}.events")
    audit = audit_events(events, list(accepted))
    requested = {e.execution_id for e in events if isinstance(e.data, ExecutionRequested)}
    phantoms = requested - set(accepted)  # answered 503, ran anyway
    during = [a for a in answers if a.sent >= down_at and a.answered <= up_at]
    statuses = Counter(a.status for a in answers)
    server_errors = [a for a in answers if a.status is not None and a.status >= 500]
    without_retry_after = [a for a in server_errors if not (a.retry_after or "").isdigit()]
    accepted_after = [a for a in answers if a.sent > up_at + 15]
    first_accepted_after = min(
        (a.sent for a in answers if a.sent > up_at and a.status == 202), default=None
    )
    write_figures(
        "3-broker-outage",
        {
            "executes_sent": len(answers),
            "answers": {str(k): v for k, v in statuses.items()},
            "accepted_2xx": len(accepted),
            "sent_while_broker_down": len(during),
            "answers_while_down": {str(k): v for k, v in Counter(a.status for a in during).items()},
            "broker_stop_took_s": round(down_at - stopping, 1),
            "broker_down_s": round(up_at - down_at, 1),
            "executes_accepted_again_after_s": None
            if first_accepted_after is None
            else round(first_accepted_after - up_at, 1),
            "service_restarts": dict(supervisor.restarts),
            "lost": len(set(stuck) | set(wrong)) or audit.lost,
            "duplicated": audit.duplicated,
            "ran_after_503": len(phantoms),
            "projector_dead_letters": len(
                [d for d in await dead_letters_of(system) if d.consumer == "projector"]
            ),
            "time_to_recover_s": None if stuck else round(recovered, 1),
        },
    )
    assert during, "no execute was sent while the broker was down"
    assert all(a.status == 503 for a in during), Counter(a.status for a in during)
    assert not [a for a in server_errors if a.status != 503], [
        (a.status, a.error) for a in server_errors if a.status != 503
    ][:5]
    assert not without_retry_after, [(a.status, a.retry_after) for a in without_retry_after][:5]
    assert not [a for a in answers if a.status is None], [
        a.error for a in answers if a.status is None
    ][:5]
    assert not stuck, f"{len(stuck)} accepted executions never ran: {audit.problems()}"
    assert not wrong, wrong[:5]
    assert not audit.problems(), audit.problems()
    assert accepted_after and all(a.status == 202 for a in accepted_after), (
        "executes sent 15 s or more after the broker returned: "
        f"{Counter(a.status for a in accepted_after)}, e.g. {accepted_after[-1].error}"
    )
    assert readyz.status_code == 200, readyz.text


POSTGRES_DOWN_S = 20.0


def slow_workflow(delay_s: float) -> dict[str, Any]:
    """PLUS_ONE with a longer wait: executions that are still running when Postgres stops."""
    steps = [dict(step) for step in PLUS_ONE["steps"]]
    steps[1] = {**steps[1], "params": {"seconds": delay_s}}
    return {**PLUS_ONE, "name": f"Plus one after {delay_s} s", "steps": steps}


async def probe_reads(
    client: httpx.AsyncClient, workflow_id: str, execution_id: str
) -> list[tuple[str, int | None, str | None]]:
    """One round of reads (and one write), sent together."""
    requests = (
        ("GET", "/v1/executions", None),
        ("GET", f"/v1/executions/{execution_id}", None),
        ("GET", f"/v1/executions/{execution_id}/logs", None),
        ("GET", f"/v1/workflows/{workflow_id}", None),
        ("POST", f"/v1/workflows/{workflow_id}/execute", {"inputData": {"i": -1}}),
    )

    async def one(method: str, path: str, body: Any) -> tuple[str, int | None, str | None]:
        try:
            response = await client.request(method, path, json=body, timeout=30)
        except httpx.HTTPError as exc:
            return (f"{method} {path}", None, repr(exc))
        return (f"{method} {path}", response.status_code, response.headers.get("retry-after"))

    return list(await asyncio.gather(*(one(*r) for r in requests)))


async def reads_recover(
    client: httpx.AsyncClient, workflow_id: str, execution_id: str, timeout_s: float
) -> tuple[float | None, int]:
    """(seconds until a whole round of requests succeeds, 503s answered until then)."""
    began = time.monotonic()
    unavailable = 0
    while time.monotonic() - began < timeout_s:
        answers = await probe_reads(client, workflow_id, execution_id)
        unavailable += sum(1 for _, status, _ in answers if status == 503)
        if all(status in (200, 202) for _, status, _ in answers):
            return time.monotonic() - began, unavailable
        await asyncio.sleep(0.2)
    return None, unavailable


@pytest.mark.timeout(360)
async def test_postgres_stopped_for_20s(own_infra_up: OwnInfra, make_system: MakeSystem) -> None:
    own = own_infra_up
    system: FaultSystem = await make_system(services=SERVICES, partitions=3, on=own.infra)
    supervisor = Supervisor(system, SERVICES)
    supervisor.start()
    token = system.create_token("ws-postgres-outage")
    probes: list[tuple[str, int | None, str | None]] = []
    try:
        async with gateway_client(system, token) as client:
            quick = await create_workflow(client, slow_workflow(0.2))
            slow = await create_workflow(client, slow_workflow(8.0))
            answers = []
            for i in range(150):
                workflow_id = slow if i % 2 else quick
                answers.append(
                    await client.post(
                        f"/v1/workflows/{workflow_id}/execute", json={"inputData": {"i": i}}
                    )
                )
            assert [a.status_code for a in answers] == [202] * len(answers)
            accepted = {a.json()["data"]["executionId"]: i for i, a in enumerate(answers)}
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own.stop_postgres)
            down_at = time.monotonic()
            down_wall = time.time()
            sample = next(iter(accepted))
            while time.monotonic() - down_at < POSTGRES_DOWN_S - 1:
                probes += await probe_reads(client, quick, sample)
                await asyncio.sleep(
                    max(0.0, min(1.0, down_at + POSTGRES_DOWN_S - time.monotonic()))
                )
            await asyncio.sleep(max(0.0, down_at + POSTGRES_DOWN_S - time.monotonic()))
            await asyncio.to_thread(own.start_postgres)
            up_at = time.monotonic()
            up_wall = time.time()
            reads_back, unavailable_after = await reads_recover(client, quick, sample, 30)
            rows = await wait_terminal(
                system.database_url, list(accepted), timeout_s=150, strict=False
            )
            recovered = time.monotonic() - up_at
    finally:
        await supervisor.stop()
    stuck = not_terminal(rows, list(accepted))
    wrong = check_outputs(rows, accepted)
    events = await read_events(system.bootstrap, f"{system.topic_prefix}.events")
    audit = audit_events(events, list(accepted))
    finished_while_down = [
        e
        for e in events
        if e.execution_id in accepted
        and isinstance(e.data, ExecutionSucceeded)
        and down_wall <= e.time.timestamp() <= up_wall
    ]
    unprojected = [
        e for e in accepted if e in rows and rows[e]["last_seq"] != len(audit.by_execution[e])
    ]
    rebuilt = rebuild_and_compare(system)
    answers_down = Counter(status for _, status, _ in probes)
    write_figures(
        "6-postgres-outage",
        {
            "executions_accepted_before": len(accepted),
            "postgres_down_s": round(up_at - down_at, 1),
            "requests_while_down": len(probes),
            "answers_while_down": {str(k): v for k, v in answers_down.items()},
            "finished_while_postgres_down": len(finished_while_down),
            "service_restarts": dict(supervisor.restarts),
            "lost": len(set(stuck) | set(wrong)) or audit.lost,
            "duplicated": audit.duplicated,
            "rebuild_equal": rebuilt.returncode == 0,
            "reads_back_after_s": None if reads_back is None else round(reads_back, 1),
            "answered_503_after_postgres_returned": unavailable_after,
            "time_to_recover_s": None if stuck else round(recovered, 1),
        },
    )
    assert probes and all(status == 503 for _, status, _ in probes), [
        p for p in probes if p[1] != 503
    ][:10]
    assert all((retry or "").isdigit() for _, _, retry in probes), probes[:5]
    assert finished_while_down, "no execution ran to its end while Postgres was down"
    assert not stuck, f"{len(stuck)} accepted executions not projected: {audit.problems()}"
    assert not wrong, wrong[:5]
    assert not audit.problems(), audit.problems()
    assert not unprojected, unprojected[:5]
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr[-2000:]
    assert reads_back is not None, "reads still failing 30 s after Postgres returned"


def rebuild_and_compare(system: FaultSystem) -> subprocess.CompletedProcess[str]:
    """`projector rebuild` into a fresh schema, then `projector compare` with the live one."""
    env = system.env()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "jobsprint.projector", "rebuild", "--schema", "rebuilt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if rebuilt.returncode != 0:
        return rebuilt
    return subprocess.run(
        [sys.executable, "-m", "jobsprint.projector", "compare", "public", "rebuilt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
