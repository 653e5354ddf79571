"""`apply_batch` against a real Postgres, at the edges of its pipelined transaction: a value
Postgres refuses, a failure inside the pipeline or at COMMIT, a dead-letter sink that
fails. Whatever fails, nothing of the batch is committed and nobody is notified; the
one-by-one retry still isolates the one bad event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import ConsumerRecord
from psycopg.pq import TransactionStatus

from jobsprint.events import Envelope, Payload, StepStarted, encode
from jobsprint.projector import store
from jobsprint.projector.batch import Record, apply_batch

pytestmark = pytest.mark.integration

TOPIC = "batch.events"


def record(value: bytes, offset: int, partition: int = 0) -> Record:
    return ConsumerRecord(
        TOPIC, partition, offset, 0, 0, b"key", value, None, 3, len(value), []
    )  # fmt: skip


def records(values: list[bytes], partition: int = 0) -> list[Record]:
    return [record(v, offset, partition) for offset, v in enumerate(values)]


def encoded(events: list[Envelope[Payload]]) -> list[bytes]:
    return [encode(e) for e in events]


class DeadLetters:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[int, str]] = []
        self.fail = fail

    async def __call__(self, rec: Record, error: str) -> None:
        if self.fail:
            raise RuntimeError("Kafka is away")
        self.sent.append((rec.offset, error))


@pytest.fixture
async def conn(database: str) -> AsyncIterator[store.Connection]:
    await store.prepare_schema(database, "public")
    connection = await store.connect(database, "public")
    yield connection
    await connection.close()


@pytest.fixture
async def listener(database: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    connection = await psycopg.AsyncConnection.connect(database, autocommit=True)
    await connection.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
    yield connection
    await connection.close()


async def heard(listener: psycopg.AsyncConnection[Any]) -> list[str]:
    return [n.payload async for n in listener.notifies(timeout=0.3)]


async def table(database: str, query: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        cur = await conn.execute(query)
        return await cur.fetchall()


def refused_request(history: Any) -> tuple[str, bytes]:
    """An ExecutionRequested that decodes (pydantic reads "NaN" as a float) but that
    Postgres refuses: NaN is written as null into the NOT NULL timeout_s."""
    run = history().requested()
    doc = orjson.loads(encode(run.events[0]))
    doc["data"]["timeout_s"] = "NaN"
    return run.execution_id, orjson.dumps(doc)


async def test_a_refused_value_leaves_the_batch_to_the_one_by_one_retry(
    conn: store.Connection, database: str, listener: Any, history: Any
) -> None:
    ok = history().requested().started().step("s", 0).completed("s", 1).succeeded({"ok": 1})
    refused_id, refused = refused_request(history)
    orphan = history("exec_nobody").add(
        StepStarted(step_id="s", step_name="S", step_type="log", position=0)
    )
    later = history().requested().started()
    values = [*encoded(ok.events[:3]), refused, *encoded(orphan.events)]
    values += [b"\xff not json", *encoded(ok.events[3:]), *encoded(later.events)]
    dead = DeadLetters()

    result = await apply_batch(conn, TOPIC, records(values), dead_letter=dead, notify=True)

    assert [offset for offset, _ in dead.sent] == [3, 4, 5]  # each once, in offset order
    assert "refused by Postgres" in dead.sent[0][1]
    assert "exec_nobody" in dead.sent[1][1]
    assert dead.sent[2][1].startswith("undecodable")
    assert (result.applied, result.dead_letters, result.positions) == (7, 3, {0: 10})
    assert await heard(listener) == [f"{ok.execution_id} success"]  # once
    assert sorted(await table(database, "SELECT id, status FROM executions")) == sorted(
        [(ok.execution_id, "success"), (later.execution_id, "running")]
    )
    assert refused_id not in {r[0] for r in await table(database, "SELECT id FROM executions")}
    assert await store.read_checkpoints(conn, TOPIC) == {0: 10}
    assert conn.info.transaction_status == TransactionStatus.IDLE


@pytest.mark.parametrize("where", ["write", "commit"])
async def test_a_failure_inside_the_pipeline_commits_nothing_and_notifies_nobody(
    conn: store.Connection, database: str, listener: Any, history: Any, where: str
) -> None:
    """Not a value Postgres refuses (that would be retried event by event) but a failure:
    of the statement writing the rows, or of COMMIT itself (a deferred trigger)."""
    await conn.execute(
        "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
    )
    if where == "write":
        await conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON execution_logs"
            " FOR EACH ROW EXECUTE FUNCTION fail()"
        )
    else:
        await conn.execute(
            "CREATE CONSTRAINT TRIGGER fail AFTER INSERT OR UPDATE ON projector_checkpoints"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail()"
        )
    run = history().requested().started().step("s", 0).log("hi", "s").completed("s", 1)
    run.succeeded({"ok": 1})
    batch = records(encoded(run.events))

    with pytest.raises(psycopg.errors.RaiseException, match="injected failure"):
        await apply_batch(conn, TOPIC, batch, dead_letter=DeadLetters(), notify=True)

    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert await table(database, "SELECT id FROM executions") == []
    assert await table(database, "SELECT * FROM projector_checkpoints") == []
    assert await heard(listener) == []

    await conn.execute(
        "DROP TRIGGER fail ON "
        + ("execution_logs" if where == "write" else "projector_checkpoints")
    )
    result = await apply_batch(conn, TOPIC, batch, dead_letter=DeadLetters(), notify=True)
    assert result.positions == {0: len(batch)}
    assert await heard(listener) == [f"{run.execution_id} success"]


async def test_a_dead_letter_that_cannot_be_sent_commits_nothing(
    conn: store.Connection, database: str, listener: Any, history: Any
) -> None:
    run = history().requested().started().cancelled(None)
    batch = records([*encoded(run.events[:2]), b"\xff not json", *encoded(run.events[2:])])

    with pytest.raises(RuntimeError, match="Kafka is away"):
        await apply_batch(conn, TOPIC, batch, dead_letter=DeadLetters(fail=True), notify=True)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert await table(database, "SELECT id FROM executions") == []
    assert await table(database, "SELECT * FROM projector_checkpoints") == []
    assert await heard(listener) == []

    dead = DeadLetters()
    await apply_batch(conn, TOPIC, batch, dead_letter=dead, notify=True)
    assert [offset for offset, _ in dead.sent] == [2]
    assert await heard(listener) == [f"{run.execution_id} cancelled"]


async def test_records_below_the_checkpoints_are_skipped_on_every_partition(
    conn: store.Connection, database: str, listener: Any, history: Any
) -> None:
    a = history().requested().started().succeeded(None)
    b = history().requested().started().failed("s")
    first = records(encoded(a.events), partition=0) + records(encoded(b.events[:2]), partition=1)
    await apply_batch(conn, TOPIC, first, dead_letter=DeadLetters(), notify=True)
    assert await heard(listener) == [f"{a.execution_id} success"]

    again = [*first, record(encode(b.events[2]), 2, partition=1)]
    result = await apply_batch(conn, TOPIC, again, dead_letter=DeadLetters(), notify=False)
    assert (result.applied, result.skipped, result.positions) == (1, 5, {1: 3})
    assert await heard(listener) == []  # notify=False (rebuild)
    assert await store.read_checkpoints(conn, TOPIC) == {0: 3, 1: 3}
    assert sorted(await table(database, "SELECT status FROM executions")) == [
        ("error",),
        ("success",),
    ]
