"""One batch of records from the events topic, applied to the read model in ONE transaction
together with the partitions' next offsets. The live consumer and `rebuild` share this."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import orjson
import psycopg
from aiokafka import ConsumerRecord
from psycopg.pq import TransactionStatus

from jobsprint.events import (
    Envelope,
    ExecutionCancelled,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    UndecodableMessage,
    decode,
)
from jobsprint.projector import store
from jobsprint.projector.fold import Changes, Projection, ProjectionError

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
DeadLetterSink = Callable[[Record, str], Awaitable[None]]

# Errors a single bad event can cause while writing (a value Postgres refuses); anything
# else from Postgres is infrastructure and stops the process.
_DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, orjson.JSONEncodeError)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A record and what it decoded to: an event, or why it could not be decoded."""

    record: Record
    event: Envelope[Payload] | None
    error: str | None = None


@dataclass(slots=True)
class BatchResult:
    applied: int = 0  # events that changed the read model
    skipped: int = 0  # redeliveries, events of deleted executions, already checkpointed records
    dead_letters: int = 0
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset stored
    event_types: Counter[str] = field(default_factory=Counter)
    notifications: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Fold:
    applied: int = 0
    skipped: int = 0
    rejected: list[tuple[Record, str]] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)


def decode_records(records: Sequence[Record]) -> list[Incoming]:
    decoded = []
    for record in records:
        try:
            decoded.append(Incoming(record, decode(record.value)))
        except UndecodableMessage as exc:
            decoded.append(Incoming(record, None, exc.reason))
    return decoded


async def apply_batch(
    conn: store.Connection,
    topic: str,
    records: Sequence[Record],
    *,
    dead_letter: DeadLetterSink,
    notify: bool,
) -> BatchResult:
    """Fold `records` (one topic, any partitions, offset order within each) into the read
    model and store the next offsets, atomically. Poison records go to `dead_letter` before
    the commit; at worst a crash sends one twice, it never loses one."""
    incoming = decode_records(records)  # CPU work outside the transaction
    try:
        return await _apply_together(conn, topic, incoming, dead_letter, notify)
    except _DATA_ERRORS as exc:
        log.warning("batch refused by Postgres (%s); applying it event by event", exc)
    return await _apply_one_by_one(conn, topic, incoming, dead_letter, notify)


async def _apply_together(
    conn: store.Connection,
    topic: str,
    incoming: Sequence[Incoming],
    dead_letter: DeadLetterSink,
    notify: bool,
) -> BatchResult:
    """The whole batch in one transaction, pipelined into two round trips: BEGIN, the
    checkpoint lock and the loads; then, folded in memory, one statement writing the rows,
    the checkpoints and the notifications, and COMMIT. Postgres skips every statement
    after one that fails (COMMIT included); the transaction is then rolled back."""
    execution_ids, step_keys = _touched(incoming)  # of every record: a superset of `fresh`
    try:
        async with conn.pipeline() as pipeline:
            await conn.execute(b"BEGIN", prepare=False)
            stored, projection = await store.lock_and_load(
                conn, topic, _partitions(incoming), execution_ids, step_keys
            )
            fresh = _fresh(incoming, stored)
            folded = _fold(projection, fresh)
            changes = projection.changes()
            folded.notifications = changes.notifications
            result = _result(incoming, fresh, folded)
            await store.write_changes(
                conn,
                changes,
                topic=topic,
                positions=result.positions,
                notifications=result.notifications if notify else (),
            )
            if folded.rejected:  # poison is dead-lettered once Postgres took the rest
                await pipeline.sync()
                for record, error in folded.rejected:
                    await dead_letter(record, error)
            await conn.execute(b"COMMIT", prepare=False)
    except BaseException:
        await _roll_back(conn)
        raise
    return result


async def _apply_one_by_one(
    conn: store.Connection,
    topic: str,
    incoming: Sequence[Incoming],
    dead_letter: DeadLetterSink,
    notify: bool,
) -> BatchResult:
    """The slow path after Postgres refused a batch: a new transaction (the checkpoints
    locked and read again), each event in its own savepoint, so the one Postgres refuses
    is dead-lettered and the others still apply."""
    async with conn.transaction():
        stored = await store.lock_checkpoints(conn, topic, _partitions(incoming))
        fresh = _fresh(incoming, stored)
        folded = _Fold()
        for item in fresh:
            try:
                async with conn.transaction():
                    one = await _fold_together(conn, [item])
            except _DATA_ERRORS as exc:
                folded.rejected.append((item.record, f"refused by Postgres: {exc}"))
                continue
            folded.applied += one.applied
            folded.skipped += one.skipped
            folded.rejected += one.rejected
            folded.notifications += one.notifications
        for record, error in folded.rejected:
            await dead_letter(record, error)
        result = _result(incoming, fresh, folded)
        await store.write_changes(
            conn,
            Changes(),
            topic=topic,
            positions=result.positions,
            notifications=result.notifications if notify else (),
        )
    return result


async def _fold_together(conn: store.Connection, items: Sequence[Incoming]) -> _Fold:
    """Load every touched execution, fold in memory, write set-based (pipelined)."""
    execution_ids, step_keys = _touched(items)
    async with conn.pipeline():
        projection = await store.load_projection(conn, execution_ids, step_keys)
        folded = _fold(projection, items)
        changes = projection.changes()
        await store.write_changes(conn, changes)
    folded.notifications = changes.notifications
    return folded


def _fold(projection: Projection, items: Sequence[Incoming]) -> _Fold:
    folded = _Fold()
    for item in items:
        if item.event is None:
            folded.rejected.append((item.record, f"undecodable: {item.error}"))
            continue
        try:
            if projection.apply(item.event):
                folded.applied += 1
            else:
                folded.skipped += 1
        except ProjectionError as exc:
            folded.rejected.append((item.record, f"cannot project: {exc}"))
    return folded


def _partitions(incoming: Sequence[Incoming]) -> list[int]:
    return sorted({i.record.partition for i in incoming})


def _fresh(incoming: Sequence[Incoming], stored: dict[int, int]) -> list[Incoming]:
    """Records below a stored position were applied by an earlier owner of the partition."""
    return [i for i in incoming if i.record.offset >= stored.get(i.record.partition, 0)]


def _result(incoming: Sequence[Incoming], fresh: Sequence[Incoming], folded: _Fold) -> BatchResult:
    result = BatchResult(
        applied=folded.applied,
        skipped=len(incoming) - len(fresh) + folded.skipped,
        dead_letters=len(folded.rejected),
        notifications=folded.notifications,
    )
    for item in fresh:
        result.positions[item.record.partition] = item.record.offset + 1
        if item.event is not None:
            result.event_types[item.event.type] += 1
    return result


async def _roll_back(conn: store.Connection) -> None:
    """End the transaction a failure left open (or aborted). A broken connection has none
    to end; a failure to roll back must not hide the failure that led here."""
    if conn.info.transaction_status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        return
    try:
        await conn.execute(b"ROLLBACK", prepare=False)
    except psycopg.Error as exc:
        log.warning("could not roll back the batch's transaction: %s", exc)


def _touched(items: Sequence[Incoming]) -> tuple[list[str], list[tuple[str, str]]]:
    """The executions and the step rows these events touch, in first-touch order."""
    events = [i.event for i in items if i.event is not None]
    execution_ids = list(dict.fromkeys(e.execution_id for e in events))
    step_keys = list(dict.fromkeys(key for e in events if (key := _step_key(e)) is not None))
    return execution_ids, step_keys


def _step_key(event: Envelope[Payload]) -> tuple[str, str] | None:
    """The step row an event touches, if any."""
    data = event.data
    if isinstance(data, StepStarted | StepCompleted | StepFailed):
        return (event.execution_id, data.step_id)
    if isinstance(data, ExecutionCancelled) and data.step_id is not None:
        return (event.execution_id, data.step_id)
    return None
