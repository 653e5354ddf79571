"""The live projector against a real broker and a real Postgres: what a user sees in the
read model, redelivery, poison records, and a rebuild that matches the live tables."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from psycopg.rows import dict_row

from jobsprint.events import DeadLetter, StepStarted, Topics, encode
from jobsprint.projector.compare import compare_schemas, table_checksums
from jobsprint.projector.rebuild import rebuild
from jobsprint.projector.settings import ProjectorSettings

pytestmark = pytest.mark.integration


async def rows(database: str, query: str, *params: Any) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(database, row_factory=dict_row) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def test_the_read_model_shows_what_happened(
    settings: ProjectorSettings,
    topics: Topics,
    database: str,
    publisher: Any,
    history: Any,
    run_projector: Any,
    caught_up: Any,
) -> None:
    ok = history().requested().started().step("node_1", 0).log("hello", "node_1", k=1)
    ok.completed("node_1", {"email": "x"}).step("node_2", 1).completed("node_2", {"sent": True})
    ok.log("done").succeeded({"response": "thanks", "sent": True})
    retried = history().requested().started().step("node_1", 0)
    retried.step_failed("node_1", 1, will_retry=True).step("node_1", 0, attempt=2)
    retried.step_failed("node_1", 2, will_retry=False).failed("node_1")
    cancelled = history().requested().started().step("node_1", 0).cancelled("node_1")
    deleted = history().requested().started().succeeded(None).deleted()
    pending = history().requested(triggered_by="retry", original_execution_id="exec_x")
    everything = [ok, retried, cancelled, deleted, pending]

    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as listener:
        await listener.execute("LISTEN jobsprint_executions")
        async with run_projector(settings) as projector:
            await publisher.send([e for h in everything for e in h.events])
            assert len(publisher.last_offsets) > 1  # the executions span partitions
            await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)
        notified = [n.payload async for n in listener.notifies(timeout=1.0)]

    executions = {
        r["id"]: r for r in await rows(database, "SELECT * FROM executions ORDER BY id DESC")
    }
    assert set(executions) == {h.execution_id for h in (ok, retried, cancelled, pending)}

    done = executions[ok.execution_id]
    assert done["status"] == "success"
    assert done["output"] == {"response": "thanks", "sent": True}
    assert done["input"] == {"email": {"from": "user@example.com"}}
    assert done["started_at"] == ok.events[1].time
    assert done["finished_at"] == ok.events[-1].time
    assert done["duration_ms"] == ok.events[-1].data.duration_ms == 2000
    assert done["error"] is None
    assert done["last_seq"] == len(ok.events)
    steps = await rows(
        database,
        "SELECT * FROM execution_steps WHERE execution_id = %s ORDER BY started_seq",
        ok.execution_id,
    )
    assert [(s["step_id"], s["status"], s["output"]) for s in steps] == [
        ("node_1", "success", {"email": "x"}),
        ("node_2", "success", {"sent": True}),
    ]
    logs = await rows(
        database,
        "SELECT * FROM execution_logs WHERE execution_id = %s ORDER BY seq",
        ok.execution_id,
    )
    assert [(log["message"], log["step_id"], log["data"]) for log in logs] == [
        ("hello", "node_1", {"k": 1}),
        ("done", None, None),
    ]

    failed = executions[retried.execution_id]
    assert failed["status"] == "error"
    assert failed["error"] == {"code": "http_status", "message": "HTTP 503", "stepId": "node_1"}
    [step] = await rows(
        database, "SELECT * FROM execution_steps WHERE execution_id = %s", retried.execution_id
    )
    assert (step["status"], step["attempts"], step["duration_ms"]) == ("error", 2, 120)

    stopped = executions[cancelled.execution_id]
    assert stopped["status"] == "cancelled"
    assert stopped["cancelled_at"] == stopped["finished_at"] == cancelled.events[-1].time
    [step] = await rows(
        database, "SELECT * FROM execution_steps WHERE execution_id = %s", cancelled.execution_id
    )
    assert step["status"] == "cancelled"

    waiting = executions[pending.execution_id]
    assert (waiting["status"], waiting["triggered_by"], waiting["original_execution_id"]) == (
        "pending",
        "retry",
        "exec_x",
    )
    for table in ("execution_steps", "execution_logs"):
        gone = await rows(
            database, f"SELECT * FROM {table} WHERE execution_id = %s", deleted.execution_id
        )
        assert gone == []

    assert sorted(notified) == sorted(
        [
            f"{ok.execution_id} success",
            f"{retried.execution_id} error",
            f"{cancelled.execution_id} cancelled",
            f"{deleted.execution_id} success",
            f"{deleted.execution_id} deleted",
        ]
    )


async def test_replaying_everything_again_changes_nothing(
    settings: ProjectorSettings,
    bootstrap: str,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    run_projector: Any,
    caught_up: Any,
    stored_checkpoints: Any,
) -> None:
    await publisher.send(make_workload(60))
    async with run_projector(settings) as projector:
        await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)
    # Kafka is told the positions too, so ops tools see the group's lag
    assert await kafka_committed(bootstrap, settings.projector_group) == await stored_checkpoints(
        database, topics.events
    )
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        before = await table_checksums(conn, "public")
        # forget the positions in Postgres: the projector starts over from offset 0 (the
        # offsets it committed to Kafka are still there and must not matter)
        await conn.execute("DELETE FROM projector_checkpoints")
        await conn.execute("LISTEN jobsprint_executions")
        async with run_projector(settings) as projector:
            await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)
        after = await table_checksums(conn, "public")
        replay_notifications = [n async for n in conn.notifies(timeout=0.5)]
    assert before["executions"].rows == 54  # 6 of the 60 were deleted
    assert before["execution_logs"].rows == 60
    assert after == before
    assert replay_notifications == []  # nobody waiting on an execution hears it finish twice


async def test_poison_is_dead_lettered_and_the_partition_moves_on(
    settings: ProjectorSettings,
    bootstrap: str,
    topics: Topics,
    database: str,
    publisher: Any,
    history: Any,
    run_projector: Any,
    caught_up: Any,
) -> None:
    run = history().requested().started().step("node_1", 0)
    run.log("nul \x00 in a message").completed("node_1", 1).succeeded({"ok": True})
    partition = await publisher.partition_of(run.events[0])
    garbage_offset = await publisher.send_raw(
        b"\xff not json", run.execution_id.encode(), partition
    )
    orphan = history("exec_nobody").add(
        StepStarted(step_id="s", step_name="S", step_type="log", position=0)
    )
    orphan_offset = await publisher.send_raw(encode(orphan.events[0]), b"exec_nobody", partition)
    # decodes (pydantic reads "NaN" as a float) but Postgres refuses it: timeout_s NOT NULL
    refused = history().requested()
    doc = orjson.loads(encode(refused.events[0]))
    doc["data"]["timeout_s"] = "NaN"
    refused_offset = await publisher.send_raw(
        orjson.dumps(doc), refused.execution_id.encode(), partition
    )
    await publisher.send(run.events[1:])

    async with run_projector(settings) as projector:
        await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)

    [row] = await rows(database, "SELECT * FROM executions")
    assert (row["id"], row["status"], row["output"]) == (run.execution_id, "success", {"ok": True})
    [log] = await rows(database, "SELECT message FROM execution_logs")
    assert log["message"] == "nul \ufffd in a message"

    letters = await read_dead_letters(bootstrap, topics, 3)
    assert [(d.topic, d.partition, d.offset, d.consumer) for d in letters] == [
        (topics.events, partition, garbage_offset, "projector"),
        (topics.events, partition, orphan_offset, "projector"),
        (topics.events, partition, refused_offset, "projector"),
    ]
    assert letters[0].error.startswith("undecodable: not JSON")
    assert letters[0].payload == b"\xff not json"
    assert "exec_nobody" in letters[1].error
    assert "refused by Postgres" in letters[2].error
    assert letters[1].key == "exec_nobody"


async def kafka_committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def read_dead_letters(bootstrap: str, topics: Topics, count: int) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        topics.dead_letter, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        async with asyncio.timeout(10):
            while len(letters) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    letters += [DeadLetter.model_validate(orjson.loads(r.value)) for r in records]
    finally:
        await consumer.stop()
    return letters


async def test_a_rebuild_matches_the_live_read_model(
    settings: ProjectorSettings,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    run_projector: Any,
    caught_up: Any,
) -> None:
    await publisher.send(make_workload(100))
    async with run_projector(settings) as projector:
        await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)

    summary = await rebuild(settings, "rebuild_test")
    assert summary.schema == "rebuild_test"
    assert summary.events == sum(o + 1 for o in publisher.last_offsets.values())

    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        same, report = await compare_schemas(conn, "public", "rebuild_test")
        assert same, "\n".join(report)
        live = await table_checksums(conn, "public")
        assert live["executions"].rows == 90
        # the comparison notices a difference a user would see
        await conn.execute(
            "UPDATE rebuild_test.execution_steps SET status = 'success' WHERE status = 'error'"
        )
        same, report = await compare_schemas(conn, "public", "rebuild_test")
        assert not same
        assert [line.endswith("DIFFERENT") for line in report] == [False, True, False, False]

    again = await rebuild(settings, "rebuild_test")  # an existing schema is replaced
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        assert (await compare_schemas(conn, "public", again.schema))[0]


async def test_waiting_for_fuller_batches_projects_the_same_read_model(
    settings: ProjectorSettings,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    run_projector: Any,
    caught_up: Any,
) -> None:
    """`projector_batch_wait_ms` tops small polls up with what arrives meanwhile: events sent
    in a trickle while it runs end as the same read model as a rebuild."""
    waiting = settings.model_copy(update={"projector_batch_wait_ms": 20})
    events = make_workload(60)
    async with run_projector(waiting) as projector:
        for start in range(0, len(events), 7):
            await publisher.send(events[start : start + 7])
            await asyncio.sleep(0.005)
        await caught_up(database, topics.events, publisher.last_offsets, task=projector.task)
    await rebuild(settings, "rebuild_waiting")
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        same, report = await compare_schemas(conn, "public", "rebuild_waiting")
        assert same, "\n".join(report)
        assert (await table_checksums(conn, "public"))["executions"].rows == 54
