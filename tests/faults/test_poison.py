"""Poison messages (scenario 7): bytes that are not JSON, a type nobody knows, and payloads
that make the projector (or the executor) give up land in the dead-letter topic with their
origin and error, and the partitions they sat in keep flowing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from jobsprint.events import ExecuteWorkflow, LogRecorded, StepCompleted, encode, make, utcnow
from tests.faults.conftest import MakeSystem
from tests.faults.support import (
    create_workflow,
    dead_letters_of,
    gateway_client,
    topic_partitions,
    write_figures,
)

pytestmark = pytest.mark.faults

TWO_STEPS: dict[str, Any] = {
    "name": "Two steps",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.n }}"}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": "{{ steps.a.output * 2 }}"},
        },
    ],
}


def event_poison(workspace: str) -> list[tuple[str, bytes]]:
    """(what, bytes) for the events topic; each one must be dead-lettered by the projector."""
    ghost = f"exec_ghost{uuid.uuid4().hex[:12]}"
    envelope = orjson.loads(
        encode(
            make(
                LogRecorded(message="x"),
                execution_id=ghost,
                workspace_id=workspace,
                correlation_id=ghost,
                seq=1,
            )
        )
    )
    return [
        ("undecodable bytes", b"\xff\xfe\x00 this is not JSON {"),
        ("JSON but no envelope", b'["an", "array"]'),
        ("unknown type", orjson.dumps({**envelope, "type": "execution.teleported.v1"})),
        (
            "a step completion for an execution that was never requested",
            encode(
                make(
                    StepCompleted(step_id="a", output=1),
                    execution_id=ghost,
                    workspace_id=workspace,
                    correlation_id=ghost,
                    seq=3,
                )
            ),
        ),
        (
            "a command on the events topic",
            encode(
                make(
                    ExecuteWorkflow(
                        workflow_id="wf_x",
                        workflow_name="x",
                        workflow_version=1,
                        workflow={"name": "x", "steps": []},
                        requested_at=utcnow(),
                    ),
                    execution_id=ghost,
                    workspace_id=workspace,
                    correlation_id=ghost,
                )
            ),
        ),
    ]


def command_poison(workspace: str) -> list[tuple[str, bytes]]:
    """(what, bytes) for the commands topic; each one must be dead-lettered by an executor."""
    ghost = f"exec_ghost{uuid.uuid4().hex[:12]}"
    return [
        ("undecodable command bytes", b"\x00\x01garbage"),
        (
            "an event on the commands topic",
            encode(
                make(
                    LogRecorded(message="not a command"),
                    execution_id=ghost,
                    workspace_id=workspace,
                    correlation_id=ghost,
                    seq=1,
                )
            ),
        ),
    ]


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.5)
    return False


@pytest.mark.timeout(180)
async def test_poison_messages_are_dead_lettered_and_partitions_keep_flowing(
    make_system: MakeSystem,
) -> None:
    system = await make_system(
        services=["projector", "executor-1", "executor-2", "api-gateway"], partitions=3
    )
    token = system.create_token("ws-poison")
    events_topic = f"{system.topic_prefix}.events"
    commands_topic = f"{system.topic_prefix}.commands"
    async with gateway_client(system, token) as client:
        workflow_id = await create_workflow(client, TWO_STEPS)
        before = await client.post(
            f"/v1/workflows/{workflow_id}/execute",
            json={"inputData": {"n": 1}, "options": {"waitForCompletion": True}},
        )
        assert before.status_code == 200, before.text

        producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap, acks="all")
        await producer.start()
        sent: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> what
        try:
            for topic, poison in (
                (events_topic, event_poison("ws_poison")),
                (commands_topic, command_poison("ws_poison")),
            ):
                for partition in await topic_partitions(system.bootstrap, topic):
                    for what, value in poison:
                        meta = await producer.send_and_wait(
                            topic, value, key=b"poison", partition=partition
                        )
                        sent[(topic, meta.partition, meta.offset)] = what
        finally:
            await producer.stop()
        poisoned_at = time.monotonic()

        # every partition's later events: 30 executions cover all three partitions
        async def run(n: int) -> tuple[float, Any]:
            began = time.monotonic()
            response = await client.post(
                f"/v1/workflows/{workflow_id}/execute",
                json={"inputData": {"n": n}, "options": {"waitForCompletion": True, "timeout": 30}},
            )
            return time.monotonic() - began, response

        after = await asyncio.gather(*(run(n) for n in range(30)))

    async def all_dead_lettered() -> bool:
        found = {(d.topic, d.partition, d.offset) for d in await dead_letters_of(system)}
        return set(sent) <= found

    landed = await wait_for(all_dead_lettered, 30)
    letters = {(d.topic, d.partition, d.offset): d for d in await dead_letters_of(system)}
    latencies = sorted(seconds for seconds, _ in after)
    write_figures(
        "7-poison",
        {
            "poison_messages": len(sent),
            "dead_lettered": sum(1 for key in sent if key in letters),
            "executions_after_poison": len(after),
            "executions_projected_after_poison": sum(
                1
                for _, r in after
                if r.status_code == 200 and r.json()["data"]["status"] == "success"
            ),
            "slowest_execute_to_projected_s": round(latencies[-1], 2),
            "lost": sum(1 for _, r in after if r.status_code != 200),
            "seconds_since_poison": round(time.monotonic() - poisoned_at, 1),
        },
    )
    assert landed, {what: key for key, what in sent.items() if key not in letters}
    for key, what in sent.items():
        letter = letters[key]
        topic = key[0]
        expected_consumer = "projector" if topic == events_topic else "executor"
        assert letter.consumer == expected_consumer, (what, letter)
        assert letter.error, (what, letter)
        assert (letter.topic, letter.partition, letter.offset) == key
    for seconds, response in after:
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["status"] == "success", data
        assert seconds < 10, f"an execution after the poison took {seconds:.1f} s to project"
    assert sorted(r.json()["data"]["outputData"] for _, r in after) == [2 * n for n in range(30)]
