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
from jobsprint.projector.fold import ProjectionError

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
    result = BatchResult()
    async with conn.transaction():
        partitions = sorted({r.partition for r in records})
        stored = await store.lock_checkpoints(conn, topic, partitions)
        # Records below a stored position were applied by an earlier owner of the partition.
        fresh = [i for i in incoming if i.record.offset >= stored.get(i.record.partition, 0)]
        result.skipped = len(incoming) - len(fresh)
        if not fresh:
            return result
        try:
            async with conn.transaction():  # savepoint
                folded = await _fold_together(conn, fresh)
        except _DATA_ERRORS as exc:
            log.warning("batch refused by Postgres (%s); applying it event by event", exc)
            folded = await _fold_one_by_one(conn, fresh)
        for record, error in folded.rejected:
            await dead_letter(record, error)
        for item in fresh:
            result.positions[item.record.partition] = item.record.offset + 1
            if item.event is not None:
                result.event_types[item.event.type] += 1
        await store.save_checkpoints(conn, topic, result.positions)
        if notify:
            await store.notify(conn, folded.notifications)
    result.applied = folded.applied
    result.skipped += folded.skipped
    result.dead_letters = len(folded.rejected)
    result.notifications = folded.notifications
    return result


async def _fold_together(conn: store.Connection, items: Sequence[Incoming]) -> _Fold:
    """Load every touched execution with one query, fold in memory, write set-based."""
    events = [i.event for i in items if i.event is not None]
    execution_ids = list(dict.fromkeys(e.execution_id for e in events))
    step_keys = list(dict.fromkeys(key for e in events if (key := _step_key(e)) is not None))
    projection = await store.load_projection(conn, execution_ids, step_keys)
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
    changes = projection.changes()
    await store.write_changes(conn, changes)
    folded.notifications = changes.notifications
    return folded


def _step_key(event: Envelope[Payload]) -> tuple[str, str] | None:
    """The step row an event touches, if any."""
    data = event.data
    if isinstance(data, StepStarted | StepCompleted | StepFailed):
        return (event.execution_id, data.step_id)
    if isinstance(data, ExecutionCancelled) and data.step_id is not None:
        return (event.execution_id, data.step_id)
    return None


async def _fold_one_by_one(conn: store.Connection, items: Sequence[Incoming]) -> _Fold:
    """The slow path after Postgres refused a batch: each event in its own savepoint, so
    the one it refuses is dead-lettered and the others still apply."""
    folded = _Fold()
    for item in items:
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
    return folded
