"""The executor against a real broker: commands in, committed events out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from jobsprint.events import DeadLetter, RetryExecution, ReusedStep, Topics, utcnow
from jobsprint.events.ids import new_execution_id
from jobsprint.executor.worker import Executor
from jobsprint.runtime.kafka import make_consumer

from .conftest import Commands, EventLog, executor_settings, spawn_executor, workflow

pytestmark = pytest.mark.integration

TWO_STEPS = workflow(
    {
        "id": "shape",
        "name": "Shape",
        "type": "transform",
        "params": {"output": {"who": "{{ input.user }}", "n": "{{ input.n }}"}},
    },
    {
        "id": "double",
        "name": "Double",
        "type": "transform",
        "params": {"output": {"n": "{{ steps.shape.output.n * 2 }}"}},
    },
)


async def test_two_step_workflow_appends_gap_free_events_and_succeeds(
    executor: Executor, commands: Commands, events: EventLog
) -> None:
    execution_id = await commands.execute(TWO_STEPS, {"user": "ada", "n": 21})
    await events.wait_terminal([execution_id])
    history = events.by_execution[execution_id]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [t for t in events.types(execution_id) if t != "log_recorded"] == [
        "requested",
        "started",
        "step_started",
        "step_completed",
        "step_started",
        "step_completed",
        "succeeded",
    ]
    assert history[-1].data.output == {"n": 42}  # type: ignore[attr-defined]
    messages = [e.data.message for e in history if e.type.startswith("execution.log_recorded")]  # type: ignore[attr-defined]
    assert messages[0] == "Starting workflow execution"
    assert messages[-1] == "Workflow execution completed successfully"


async def test_condition_false_jumps_to_else_and_fail_step_fails_the_execution(
    executor: Executor, commands: Commands, events: EventLog
) -> None:
    definition = workflow(
        {
            "id": "check",
            "name": "Check",
            "type": "condition",
            "params": {"if": "input.n > 10", "else": "boom"},
        },
        {"id": "big", "name": "Big", "type": "transform", "params": {"output": "big"}},
        {
            "id": "boom",
            "name": "Boom",
            "type": "fail",
            "params": {"message": "too small: {{ input.n }}", "code": "too_small"},
        },
    )
    small = await commands.execute(definition, {"n": 3})
    await events.wait_terminal([small])
    failed = events.by_execution[small][-1]
    assert failed.type == "execution.failed.v1"
    assert failed.data.error.code == "too_small"  # type: ignore[attr-defined]
    assert failed.data.error.message == "too small: 3"  # type: ignore[attr-defined]
    started = [
        e.data.step_id for e in events.by_execution[small] if e.type == "execution.step_started.v1"
    ]  # type: ignore[attr-defined]
    assert started == ["check", "boom"]


async def test_cancel_interrupts_a_running_delay_and_nothing_follows(
    executor: Executor, commands: Commands, events: EventLog
) -> None:
    definition = workflow(
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 30}},
        {"id": "after", "name": "After", "type": "transform", "params": {"output": 1}},
    )
    execution_id = await commands.execute(definition)
    await events.wait_for(execution_id, "step_started")
    began = time.monotonic()
    await commands.cancel(execution_id)
    await events.wait_terminal([execution_id], timeout_s=10)
    assert time.monotonic() - began < 5
    assert events.terminal(execution_id) == "cancelled"
    await asyncio.sleep(0.5)
    await events.poll()
    types = events.types(execution_id)
    assert types[-1] == "cancelled"
    assert types.count("step_started") == 1
    assert events.by_execution[execution_id][-1].data.step_id == "wait"  # type: ignore[attr-defined]


async def test_pending_execution_cancelled_before_it_starts_never_starts(
    executor: Executor, commands: Commands, events: EventLog
) -> None:
    execution_id = new_execution_id()
    # both commands land in one fetch more often than not; either way nothing may start after
    await commands.execute(TWO_STEPS, {"user": "x", "n": 1}, execution_id=execution_id)
    await commands.cancel(execution_id)
    await events.wait_terminal([execution_id])
    types = events.types(execution_id)
    if events.terminal(execution_id) == "cancelled":
        assert types.index("cancelled") == len(types) - 1


async def test_execution_timeout_fails_with_code_timeout(
    executor: Executor, commands: Commands, events: EventLog
) -> None:
    definition = workflow(
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 20}}
    )
    execution_id = await commands.execute(definition, timeout_s=1)
    await events.wait_terminal([execution_id], timeout_s=10)
    last = events.by_execution[execution_id][-1]
    assert last.type == "execution.failed.v1"
    assert last.data.error.code == "timeout"  # type: ignore[attr-defined]
    assert last.data.error.step_id == "wait"  # type: ignore[attr-defined]
    assert 900 <= last.data.duration_ms < 5000  # type: ignore[attr-defined]


class _Flaky(BaseHTTPRequestHandler):
    calls: Counter[str] = Counter()

    def do_GET(self) -> None:
        _Flaky.calls[self.path] += 1
        if self.path == "/flaky" and _Flaky.calls[self.path] < 3:
            self.send_response(503)
            self.end_headers()
            return
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_http_step_retries_with_backoff_until_it_succeeds(
    executor: Executor, commands: Commands, events: EventLog, http_server: str
) -> None:
    definition = workflow(
        {
            "id": "call",
            "name": "Call",
            "type": "http",
            "params": {"url": f"{http_server}/flaky"},
            "retry": {"maxAttempts": 3, "backoffSeconds": 0.1, "backoffMultiplier": 2},
        },
    )
    execution_id = await commands.execute(definition)
    await events.wait_terminal([execution_id])
    history = events.by_execution[execution_id]
    assert history[-1].type == "execution.succeeded.v1"
    assert history[-1].data.output["body"] == {"ok": True}  # type: ignore[attr-defined]
    failures = [e.data for e in history if e.type == "execution.step_failed.v1"]
    assert [(f.attempt, f.will_retry, f.error.code) for f in failures] == [  # type: ignore[attr-defined]
        (1, True, "http_status"),
        (2, True, "http_status"),
    ]


async def test_http_step_to_a_private_address_is_refused_unless_allow_listed(
    bootstrap: str, topics: Topics, commands: Commands, events: EventLog, http_server: str
) -> None:
    worker = Executor(
        executor_settings(bootstrap, topics).model_copy(update={"http_allow_list": ""})
    )
    task = asyncio.create_task(worker.run())
    try:
        definition = workflow(
            {"id": "call", "name": "Call", "type": "http", "params": {"url": f"{http_server}/x"}}
        )
        execution_id = await commands.execute(definition)
        await events.wait_terminal([execution_id])
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, 30)
    last = events.by_execution[execution_id][-1]
    assert last.data.error.code == "http_forbidden_address"  # type: ignore[attr-defined]
    assert _Flaky.calls["/x"] == 0


async def test_retry_reuses_steps_before_from_step(
    executor: Executor, commands: Commands, events: EventLog
) -> None:
    original = new_execution_id()
    retry_id = new_execution_id()
    await commands.send(
        retry_id,
        RetryExecution(
            workflow_id="wf_test",
            workflow_name="t",
            workflow_version=1,
            workflow=TWO_STEPS,
            input={"user": "ada", "n": 1},
            requested_at=utcnow(),
            original_execution_id=original,
            from_step="double",
            reused_steps=(
                ReusedStep(
                    step_id="shape",
                    step_name="Shape",
                    step_type="transform",
                    output={"who": "ada", "n": 50},
                ),
            ),
        ),
    )
    await events.wait_terminal([retry_id])
    history = events.by_execution[retry_id]
    completed = {e.data.step_id: e.data for e in history if e.type == "execution.step_completed.v1"}  # type: ignore[attr-defined]
    assert completed["shape"].reused_from == original  # type: ignore[attr-defined]
    assert completed["double"].reused_from is None  # type: ignore[attr-defined]
    assert history[-1].data.output == {"n": 100}  # type: ignore[attr-defined]
    assert history[0].data.triggered_by == "retry"  # type: ignore[attr-defined]
    assert history[0].data.original_execution_id == original  # type: ignore[attr-defined]


async def test_kill_9_of_an_executor_loses_nothing_and_duplicates_nothing(
    bootstrap: str, topics: Topics, commands: Commands, events: EventLog
) -> None:
    definition = workflow(
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 1.5}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": "{{ steps.a.output + 1 }}"},
        },
    )
    first, second = spawn_executor(bootstrap, topics), spawn_executor(bootstrap, topics)
    try:
        ids = [await commands.execute(definition, {"i": i}) for i in range(150)]
        await asyncio.sleep(2.0)
        first.kill()  # SIGKILL mid-run: its partitions move to the other executor
        first.wait()
        await events.wait_terminal(ids, timeout_s=90)
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
    for i, execution_id in enumerate(ids):
        history = events.by_execution[execution_id]
        assert [e.seq for e in history] == list(range(1, len(history) + 1)), execution_id
        completions = Counter(
            (e.data.step_id, e.data.attempt)  # type: ignore[attr-defined]
            for e in history
            if e.type == "execution.step_completed.v1"
        )
        assert set(completions.values()) == {1}, execution_id
        assert history[-1].type == "execution.succeeded.v1"
        assert history[-1].data.output == i + 1  # type: ignore[attr-defined]


def carrying(transforms: int, delay_s: float) -> dict[str, Any]:
    """Every step's output is the (big) input: the state holds it once more per step."""
    steps = [
        {"id": f"s{i}", "name": f"S{i}", "type": "transform", "params": {"output": "{{ input.s }}"}}
        for i in range(transforms)
    ]
    steps.append({"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": delay_s}})
    return workflow(*steps)


def same_partition_as(execution_id: str, partitions: int) -> str:
    wanted = DefaultPartitioner()(execution_id.encode(), list(range(partitions)), [])
    while True:
        other = new_execution_id()
        if DefaultPartitioner()(other.encode(), list(range(partitions)), []) == wanted:
            return other


async def test_an_execution_whose_state_outgrows_one_record_fails_and_its_partition_goes_on(
    bootstrap: str, topics: Topics, commands: Commands, events: EventLog
) -> None:
    worker = Executor(executor_settings(bootstrap, topics, executor_max_state_bytes=300_000))
    task = asyncio.create_task(worker.run())
    try:
        big = await commands.execute(carrying(3, 0.2), {"s": "x" * 200_000})
        partitions = len(await commands.producer.partitions_for(topics.commands))
        after = await commands.execute(
            TWO_STEPS, {"user": "b", "n": 1}, execution_id=same_partition_as(big, partitions)
        )
        await events.wait_terminal([big, after])
        # the partition was not stopped: later commands on it still run
        later = await commands.execute(
            TWO_STEPS, {"user": "c", "n": 2}, execution_id=same_partition_as(big, partitions)
        )
        await events.wait_terminal([later], timeout_s=10)
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, 60)
    assert not task.exception()
    history = events.by_execution[big]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    failed = history[-1]
    assert failed.type == "execution.failed.v1"
    error = failed.data.error  # type: ignore[attr-defined]
    assert error.code == "too_large"
    assert "over the limit of 300,000 bytes" in error.message
    assert "JOBSPRINT_EXECUTOR_MAX_STATE_BYTES" in error.message
    assert "largest parts: input 200,008 bytes" in error.message
    for execution_id in (after, later):
        assert events.terminal(execution_id) == "succeeded"


async def test_a_state_over_one_mebibyte_is_resumed_by_the_next_owner(
    bootstrap: str, topics: Topics, commands: Commands, events: EventLog
) -> None:
    """The state topic takes snapshots over Kafka's default 1 MiB, and a new owner reads
    them back: a large input survives a takeover."""
    settings = executor_settings(bootstrap, topics, executor_grace_seconds=0)
    first = Executor(settings)
    running = asyncio.create_task(first.run())
    big = await commands.execute(carrying(3, 3.0), {"s": "x" * 900_000})
    async with asyncio.timeout(30):
        while events.types(big).count("step_started") < 4:  # the delay is running
            await events.poll()
    states = [w.states[big] for w in first.partitions.values() if big in w.states]
    assert states and len(states[0].encode()) > 1_048_576
    first.stopping.set()  # leaves the group; the delay resumes elsewhere
    await asyncio.wait_for(running, 60)
    second = Executor(executor_settings(bootstrap, topics))
    resumed = asyncio.create_task(second.run())
    try:
        await events.wait_terminal([big], timeout_s=30)
    finally:
        second.stopping.set()
        await asyncio.wait_for(resumed, 60)
    history = events.by_execution[big]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert history[-1].type == "execution.succeeded.v1", history[-1].data
    assert history[-1].data.output == {"delayedSeconds": 3.0}  # type: ignore[attr-defined]


async def test_an_input_or_a_dead_letter_too_large_for_one_event_does_not_stop_the_partition(
    bootstrap: str, topics: Topics, commands: Commands, events: EventLog
) -> None:
    worker = Executor(executor_settings(bootstrap, topics, executor_max_event_bytes=262_144))
    task = asyncio.create_task(worker.run())
    try:
        big = await commands.execute(TWO_STEPS, {"user": "x" * 300_000, "n": 1})
        partitions = len(await commands.producer.partitions_for(topics.commands))
        garbage = same_partition_as(big, partitions)
        await commands.producer.send_and_wait(
            topics.commands, b"{" + b"x" * 300_000, key=garbage.encode()
        )
        after = await commands.execute(
            TWO_STEPS, {"user": "b", "n": 1}, execution_id=same_partition_as(big, partitions)
        )
        await events.wait_terminal([big, after])
        letters = await read_all(bootstrap, topics.dead_letter, 1)
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, 60)
    assert events.terminal(after) == "succeeded"
    history = events.by_execution[big]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [t for t in events.types(big) if t != "log_recorded"] == ["requested", "failed"]
    recorded = history[0].data.input  # type: ignore[attr-defined]
    assert recorded["user"].endswith("[truncated 234464 characters]"), recorded["user"][-60:]
    error = history[-1].data.error  # type: ignore[attr-defined]
    assert error.code == "too_large"
    assert "execution.requested.v1 event would be" in error.message
    assert "JOBSPRINT_EXECUTOR_MAX_EVENT_BYTES" in error.message
    letter = DeadLetter.model_validate_json(letters[0])
    assert letter.key == garbage and "payload cut to its first" in letter.error
    assert b"x" * 1000 in letter.payload and len(letters[0]) <= 262_144


async def read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    reader = make_consumer(bootstrap, topic, group_id=None, client_id="test-read-all")
    await reader.start()
    found: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await reader.getmany(timeout_ms=200)).values():
                    found.extend(r.value for r in records if r.value is not None)
    finally:
        await reader.stop()
    return found


async def test_a_new_owner_resumes_from_the_committed_position_not_the_group_offsets(
    bootstrap: str, topics: Topics, commands: Commands, events: EventLog
) -> None:
    """The commands position travels in the executor's own transactions; the consumer
    group's offsets are only published for lag tools. Rewinding them must not run anything
    twice, and they do follow the executor's progress."""
    settings = executor_settings(bootstrap, topics)
    first = Executor(settings)
    task = asyncio.create_task(first.run())
    ids = [await commands.execute(TWO_STEPS, {"user": "ada", "n": i}) for i in range(20)]
    await events.wait_terminal(ids)
    await asyncio.sleep(2.5)  # a lag report: the group's offsets are published
    first.stopping.set()
    await asyncio.wait_for(task, 60)
    published = await group_offsets(bootstrap, settings.group_id, topics.commands)
    assert sum(published.values()) == 20

    rewinder = make_consumer(bootstrap, group_id=settings.group_id, client_id="rewind")
    await rewinder.start()
    try:  # an operator (or a lost __consumer_offsets) sets the group back to the start
        rewound = {TopicPartition(topics.commands, p): 0 for p in published}
        rewinder.assign(list(rewound))
        await rewinder.commit(rewound)
    finally:
        await rewinder.stop()
    assert sum((await group_offsets(bootstrap, settings.group_id, topics.commands)).values()) == 0

    second = Executor(executor_settings(bootstrap, topics))
    task = asyncio.create_task(second.run())
    try:
        later = await commands.execute(TWO_STEPS, {"user": "bob", "n": 1})
        await events.wait_terminal([later])
        await asyncio.sleep(1.0)  # what a re-run of the first 20 would have appended by now
        await events.poll()
    finally:
        second.stopping.set()
        await asyncio.wait_for(task, 60)
    for execution_id in ids:
        assert events.types(execution_id).count("requested") == 1, execution_id


async def group_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
