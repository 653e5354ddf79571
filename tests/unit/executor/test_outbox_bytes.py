"""The outbox writes the executor's events without validating an envelope per event, and the
state snapshot without deep-copying it first. Both must write exactly the bytes they wrote
before: consumers and the projector read them."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from jobsprint.events import (
    Event,
    ExecutionDeleted,
    ExecutionStarted,
    Payload,
    decode,
    encode,
    make,
    make_encoded,
    registered_types,
)
from jobsprint.executor import outbox as outbox_module
from jobsprint.executor.outbox import Outbox
from jobsprint.executor.runner import ExecutionRunner
from jobsprint.executor.state import ExecutionState
from jobsprint.executor.steps import StepEnvironment
from tests.unit.events.test_codec_fast_path import (
    random_datetime,
    random_model,
    random_text,
    random_value,
    reference_encode,
)

pytestmark = pytest.mark.unit

ENV = StepEnvironment(http=httpx.AsyncClient(), allow_list=[], max_response_bytes=1000)
EVENT_TYPES = [cls for cls in registered_types().values() if issubclass(cls, Event)]


def state_of(workflow: dict[str, Any], input: Any = None, execution_id: str = "exec_1") -> Any:
    return ExecutionState(
        execution_id=execution_id,
        workspace_id="ws_1",
        correlation_id=f"corr-{execution_id}",
        workflow_id="wf",
        workflow_name=workflow["name"],
        workflow_version=1,
        workflow=workflow,
        input=input,
        triggered_by="api",
        timeout_s=30,
        requested_at=datetime.now(UTC),
    )


def assert_written_as_make_then_encode(
    state: ExecutionState, payloads: list[Payload], records: list[tuple[bytes, bytes]]
) -> None:
    """Each record is what encode(make(payload, …)) wrote for the execution's fields, the
    record's seq and time, and its (random) id; the seqs count on from 1."""
    assert len(records) == len(payloads)
    for seq, (payload, (key, value)) in enumerate(zip(payloads, records, strict=True), 1):
        doc = orjson.loads(value)
        assert key == state.execution_id.encode()
        assert doc["seq"] == seq
        envelope = make(
            payload,
            execution_id=state.execution_id,
            workspace_id=state.workspace_id,
            correlation_id=state.correlation_id,
            seq=seq,
            time=datetime.fromisoformat(doc["time"]),
        ).model_copy(update={"id": uuid.UUID(doc["id"])})
        assert value == encode(envelope) == reference_encode(envelope), payload


@pytest.mark.parametrize("seed", range(3))
def test_random_events_of_every_type_are_written_as_before(seed: int) -> None:
    rng = random.Random(seed)
    outbox = Outbox()
    state = state_of({"name": "flow", "steps": []}, execution_id=random_text(rng) or "e")
    emitted: list[Payload] = []
    for _ in range(60):
        batch = [random_model(rng, rng.choice(EVENT_TYPES)) for _ in range(rng.randrange(1, 4))]
        outbox.emit(state, *batch)
        emitted += batch
    assert state.seq == len(emitted)
    assert_written_as_make_then_encode(state, emitted, outbox.events)


def test_a_given_time_is_the_time_of_every_event_of_the_batch() -> None:
    rng = random.Random(3)
    outbox = Outbox()
    state = state_of({"name": "flow", "steps": []})
    for _ in range(50):
        at = random_datetime(rng)
        outbox.emit(state, ExecutionStarted(), ExecutionDeleted(), at=at)
        made = make(
            ExecutionStarted(), execution_id="e", workspace_id="w", correlation_id="c", time=at
        )
        want = orjson.loads(encode(made))["time"]
        assert [orjson.loads(value)["time"] for _, value in outbox.events[-2:]] == [want, want]


WORKFLOW = {
    "name": "every kind of event",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "shape", "name": "Shape \x1b[31m", "type": "transform",
         "params": {"output": {"n": "{{ input.n }}", "t": "{{ input.t }}"}}},
        {"id": "say", "name": "Say", "type": "log",
         "params": {"level": "warn", "message": "n is {{ steps.shape.output.n }}",
                    "data": {"t": "{{ input.t }}"}}},
        {"id": "check", "name": "Check", "type": "condition",
         "params": {"if": "steps.shape.output.n > 1"}},
        {"id": "boom", "name": "Boom", "type": "fail", "params": {"message": "no \u2028 way"}},
    ],
}  # fmt: skip


async def test_the_events_of_whole_executions_are_written_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emitted: list[Payload] = []

    def spy(payloads: list[Payload], **fields: Any) -> list[bytes]:
        emitted.extend(payloads)
        return make_encoded(payloads, **fields)

    monkeypatch.setattr(outbox_module, "make_encoded", spy)
    for n, workflow in enumerate([WORKFLOW, {**WORKFLOW, "steps": WORKFLOW["steps"][:3]}]):
        emitted.clear()
        outbox = Outbox()
        state = state_of(workflow, {"n": 2 - n, "t": "é\x00😀"}, execution_id=f"exec_{n}")
        await asyncio.wait_for(ExecutionRunner(state, outbox, ENV).run(), 5)
        assert state.terminal
        assert_written_as_make_then_encode(state, emitted, outbox.events)
        types = [decode(value).type for _, value in outbox.events]
        assert types[-1] == ("execution.failed.v1" if n == 0 else "execution.succeeded.v1")


def random_state(rng: random.Random) -> ExecutionState:
    state = state_of(
        {random_text(rng, 8): random_value(rng) for _ in range(3)}
        | {"name": random_text(rng), "steps": [random_value(rng)]},
        random_value(rng),
        execution_id=random_text(rng),
    )
    state.seq = rng.randrange(100)
    state.status = rng.choice(["pending", "running"])
    state.started_at = rng.choice([None, random_datetime(rng)])
    state.step_index = rng.choice([None, 0, 3])
    state.step_started_at = rng.choice([None, random_datetime(rng)])
    state.original_execution_id = rng.choice([None, random_text(rng)])
    state.reused = {random_text(rng, 8): {"output": random_value(rng)} for _ in range(2)}
    state.step_outputs = {random_text(rng, 8): random_value(rng) for _ in range(3)}
    state.persisted = rng.random() < 0.5
    return state


def encode_outcome(encode_state: Any, state: ExecutionState) -> tuple[str, Any]:
    try:
        return "ok", encode_state(state)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def encode_as_before(state: ExecutionState) -> bytes:
    doc = asdict(state)
    doc.pop("persisted")
    return orjson.dumps(doc)


def test_state_snapshots_are_written_as_before() -> None:
    rng = random.Random(11)
    outcomes = set()
    for _ in range(600):
        state = random_state(rng)
        got = encode_outcome(ExecutionState.encode, state)
        assert got == encode_outcome(encode_as_before, state)
        outcomes.add(got[0])
    assert outcomes == {"ok", "TypeError"}  # orjson refuses a Decimal: both outcomes seen
