"""Record limits (bug G): nothing enters a partition's transaction that Kafka would refuse;
the one execution whose event or state would be too large fails with `too_large`, the
others go on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from jobsprint.events import (
    ExecutionFailed,
    ExecutionSucceeded,
    LogRecorded,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    decode,
)
from jobsprint.executor.limits import (
    EVENT_SETTING,
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    STATE_SETTING,
    Limit,
    RecordLimits,
    RecordTooLarge,
    lowest,
    max_message_bytes,
    record_size,
    state_too_large,
)
from jobsprint.executor.outbox import Drained, Outbox
from jobsprint.executor.runner import ExecutionRunner
from jobsprint.executor.settings import ExecutorSettings
from jobsprint.executor.state import ExecutionState
from jobsprint.executor.steps import StepEnvironment

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def state_of(
    workflow: dict[str, Any], input: Any = None, execution_id: str = "exec_1"
) -> ExecutionState:
    return ExecutionState(
        execution_id=execution_id,
        workspace_id="ws",
        correlation_id=execution_id,
        workflow_id="wf",
        workflow_name=workflow["name"],
        workflow_version=1,
        workflow=workflow,
        input=input,
        triggered_by="api",
        timeout_s=30,
        requested_at=datetime.now(UTC),
    )


def transforms(*templates: str) -> dict[str, Any]:
    steps = [
        {"id": f"s{i}", "name": f"S{i}", "type": "transform", "params": {"output": template}}
        for i, template in enumerate(templates)
    ]
    return {"name": "flow", "trigger": {"type": "manual"}, "steps": steps}


def payloads(drained: list[tuple[bytes, bytes]]) -> list[Payload]:
    return [decode(value).data for _, value in drained]


# -- measuring --------------------------------------------------------------------------------


@pytest.mark.parametrize("value_size", [0, 1, 127, 16_384, MIB - 200, MIB, 4 * MIB, 9 * MIB])
def test_record_size_is_never_below_what_the_kafka_client_counts(value_size: int) -> None:
    key, value = b"exec_0123456789abcdef", b"x" * value_size
    assert record_size(key, value) >= DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key, value, []
    )


def test_a_setting_is_lowered_to_what_the_topics_accept_and_says_by_what() -> None:
    setting = Limit(4 * MIB, STATE_SETTING)
    assert lowest(setting, {"t.state": 8 * MIB}, ["t.state"]) == setting
    assert lowest(setting, {"t.state": MIB}, ["t.state"]) == Limit(
        MIB, "max.message.bytes of topic t.state"
    )
    # a topic whose limit is unknown counts as Kafka's default, never as unlimited
    assert lowest(setting, {}, ["t.state"]).bytes == KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert lowest(Limit(500_000, EVENT_SETTING), {}, ["a", "b"]) == Limit(500_000, EVENT_SETTING)


def test_events_obey_the_events_and_dead_letter_topics_and_state_the_state_topic() -> None:
    settings = ExecutorSettings(topic_prefix="t", executor_max_state_bytes=2 * MIB)
    limits = settings.record_limits(
        {"t.events": 3 * MIB, "t.deadletter": 900_000, "t.executor-state": 4 * MIB}
    )
    assert limits.event == Limit(900_000, "max.message.bytes of topic t.deadletter")
    assert limits.state == Limit(2 * MIB, STATE_SETTING)
    assert limits.max_request_size == 2 * MIB


def test_record_limits_below_what_a_failure_needs_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="executor_max_state_bytes"):
        ExecutorSettings(executor_max_state_bytes=1000)


def test_max_message_bytes_is_read_from_describe_configs_answers() -> None:
    answers = [
        {
            "resources": [
                {
                    "error_code": 0,
                    "resource_name": "t.events",
                    "config_entries": [
                        {"config_names": "max.message.bytes", "config_value": "1048588"}
                    ],
                },
                {"error_code": 3, "resource_name": "t.gone", "config_entries": []},
                {
                    "error_code": 0,
                    "resource_name": "t.odd",
                    "config_entries": [{"config_names": "max.message.bytes", "config_value": None}],
                },
            ]
        }
    ]
    assert max_message_bytes(answers) == {"t.events": 1_048_588}


def test_the_state_error_names_the_size_the_limit_and_the_largest_parts() -> None:
    error = state_too_large(
        1_234_567,
        Limit(1_000_000, STATE_SETTING),
        {"input": 900_002, "workflow": 300, "steps.a.output": 70_000, "steps.b.output": 80_000},
    )
    message = str(error)
    assert error.code == "too_large"
    assert "1,234,567 bytes" in message and "1,000,000 bytes" in message
    assert STATE_SETTING in message
    assert message.endswith(
        "largest parts: input 900,002 bytes, steps.b.output 80,000 bytes, "
        "steps.a.output 70,000 bytes"
    )


# -- the state --------------------------------------------------------------------------------


def test_the_last_output_is_derived_from_the_step_outputs_not_stored_twice() -> None:
    state = state_of(transforms("a", "b"), input={"big": "x" * 1000})
    assert state.last_output is None
    state.step_outputs["s0"] = "first"
    state.step_outputs["s1"] = {"second": "x" * 1000}
    assert state.last_output == {"second": "x" * 1000}
    encoded = state.encode()
    assert b"last_output" not in encoded
    assert encoded.count(b"x" * 1000) == 2  # the input and s1's output, each once
    assert ExecutionState.decode(encoded).last_output == {"second": "x" * 1000}


def test_a_snapshot_written_by_an_earlier_version_still_resumes() -> None:
    state = state_of(transforms("a", "b"))
    state.step_outputs = {"s0": 1, "s1": 2}
    doc = orjson.loads(state.encode())
    doc["last_output"] = 2
    restored = ExecutionState.decode(orjson.dumps(doc))
    assert restored.last_output == 2 and restored.persisted


# -- the outbox -------------------------------------------------------------------------------


def test_an_event_too_large_is_refused_whole_and_nothing_of_it_is_kept() -> None:
    outbox = Outbox(RecordLimits(event=Limit(10_000, EVENT_SETTING)))
    state = state_of(transforms("a"))
    outbox.emit(state, LogRecorded(message="small"))
    with pytest.raises(RecordTooLarge, match=r"execution\.log_recorded\.v1 event would be"):
        outbox.emit(state, LogRecorded(message="ok"), LogRecorded(message="x" * 20_000))
    assert state.seq == 1
    assert len(outbox.events) == 1


def ends(outbox: Outbox) -> Any:
    def handler(state: ExecutionState, exc: RecordTooLarge) -> None:
        ExecutionRunner(state, outbox, ENV).fail_too_large(exc)

    return handler


def test_a_state_too_large_to_snapshot_ends_that_execution_in_the_same_batch() -> None:
    outbox = Outbox(RecordLimits(state=Limit(300_000, STATE_SETTING)))
    big = state_of(transforms("a"), input="x" * 400_000, execution_id="exec_big")
    big.persisted = True  # an earlier, smaller snapshot exists
    small = state_of(transforms("a"), input="y", execution_id="exec_small")
    outbox.emit(big, LogRecorded(message="one"))
    outbox.emit(small, LogRecorded(message="two"))
    drained = outbox.drain(ends(outbox))
    assert big.status == "error" and small.status == "pending"
    assert dict(drained.states) == {b"exec_big": None, b"exec_small": small.encode()}
    failed = [p for p in payloads(drained.events) if isinstance(p, ExecutionFailed)]
    assert len(failed) == 1
    assert failed[0].error.code == "too_large"
    assert "largest parts: input 400,002 bytes" in failed[0].error.message
    seqs = [decode(v).seq for k, v in drained.events if k == b"exec_big"]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_handler_that_does_not_end_the_execution_is_a_bug_not_a_stall() -> None:
    outbox = Outbox(RecordLimits(state=Limit(300_000, STATE_SETTING)))
    state = state_of(transforms("a"), input="x" * 400_000)
    outbox.emit(state, LogRecorded(message="one"))
    with pytest.raises(RuntimeError, match="not ended"):
        outbox.drain(lambda state, exc: None)


# -- whole executions (no I/O: transform and delay steps) ------------------------------------


# never used: transform and delay steps do not reach the network
ENV = StepEnvironment(http=httpx.AsyncClient(), allow_list=[], max_response_bytes=1000)


async def run_with_commits(state: ExecutionState, limits: RecordLimits) -> list[Payload]:
    """Run one execution as a partition does: drain the outbox at every await point."""
    outbox = Outbox(limits)
    task = asyncio.create_task(ExecutionRunner(state, outbox, ENV).run())

    def too_large(state: ExecutionState, exc: RecordTooLarge) -> None:
        ExecutionRunner(state, outbox, ENV).fail_too_large(exc)
        task.cancel()

    drained: list[Drained] = []
    while not task.done():
        await asyncio.sleep(0)
        drained.append(outbox.drain(too_large))
    drained.append(outbox.drain(too_large))
    for batch in drained:
        for key, value in batch.states:
            if value is not None:
                assert record_size(key, value) <= limits.state.bytes
        for key, value in batch.events:
            assert record_size(key, value) <= limits.event.bytes
    events = [event for batch in drained for event in batch.events]
    assert [decode(v).seq for _, v in events] == list(range(1, len(events) + 1))
    return payloads(events)


def carrying(steps: int) -> dict[str, Any]:
    workflow = transforms(*["{{ input.s }}"] * steps)
    workflow["steps"].append(
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 0}}
    )
    return workflow


async def test_a_large_input_through_several_steps_succeeds_within_the_state_limit() -> None:
    state = state_of(carrying(4), input={"s": "x" * 900_000})
    events = await run_with_commits(state, RecordLimits(state=Limit(4 * MIB, STATE_SETTING)))
    assert isinstance(events[-1], ExecutionSucceeded)


async def test_a_state_growing_past_its_limit_fails_the_execution_with_too_large() -> None:
    state = state_of(carrying(4), input={"s": "x" * 900_000})
    events = await run_with_commits(state, RecordLimits(state=Limit(1_000_000, STATE_SETTING)))
    last = events[-1]
    assert isinstance(last, ExecutionFailed), last
    assert last.error.code == "too_large"
    assert "1,000,000 bytes" in last.error.message and STATE_SETTING in last.error.message
    # a step left in flight is closed, not shown running forever
    started = {p.step_id for p in events if isinstance(p, StepStarted)}
    closed = {p.step_id for p in events if isinstance(p, StepCompleted | StepFailed)}
    assert started == closed


async def test_an_output_too_large_for_one_event_fails_its_step_with_too_large() -> None:
    state = state_of(transforms("{{ input.s }}", "never"), input={"s": "x" * 60_000})
    events = await run_with_commits(state, RecordLimits(event=Limit(50_000, EVENT_SETTING)))
    failed = [p for p in events if isinstance(p, StepFailed)]
    assert [(f.step_id, f.error.code) for f in failed] == [("s0", "too_large")]
    assert "execution.step_completed.v1 event would be" in failed[0].error.message
    assert isinstance(events[-1], ExecutionFailed)
    assert events[-1].error.code == "too_large" and events[-1].error.step_id == "s0"
    assert not any(isinstance(p, StepCompleted) for p in events)
    assert "s0" not in state.step_outputs  # the state was left as it was
