"""The read model in Postgres: load the rows a batch touches, write its changes set-based,
and keep the Kafka positions beside them (same transaction, so they cannot disagree)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from functools import cache
from importlib.resources import files
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb, set_json_loads

from jobsprint.projector.fold import (
    Changes,
    DeletedExecution,
    ExecutionRow,
    LogRow,
    Projection,
    StepRow,
)
from jobsprint.projector.settings import check_schema_name
from jobsprint.runtime.postgres import migrate

NOTIFY_CHANNEL = "jobsprint_executions"

Connection = psycopg.AsyncConnection[Any]

# Column types, in the dataclasses' field order (checked below), for jsonb_to_recordset.
EXECUTION_COLUMNS = {
    "id": "text",
    "workspace_id": "text",
    "workflow_id": "text",
    "workflow_name": "text",
    "workflow_version": "int",
    "status": "text",
    "triggered_by": "text",
    "input": "jsonb",
    "output": "jsonb",
    "error": "jsonb",
    "original_execution_id": "text",
    "from_step": "text",
    "timeout_s": "double precision",
    "created_at": "timestamptz",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "cancelled_at": "timestamptz",
    "duration_ms": "int",
    "last_seq": "int",
}
STEP_COLUMNS = {
    "execution_id": "text",
    "step_id": "text",
    "started_seq": "int",
    "position": "int",
    "step_name": "text",
    "step_type": "text",
    "status": "text",
    "attempts": "int",
    "input": "jsonb",
    "output": "jsonb",
    "error": "jsonb",
    "reused_from": "text",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "duration_ms": "int",
}
LOG_COLUMNS = {
    "execution_id": "text",
    "seq": "int",
    "time": "timestamptz",
    "level": "text",
    "message": "text",
    "step_id": "text",
    "data": "jsonb",
}
DELETED_COLUMNS = {"execution_id": "text", "last_seq": "int", "deleted_at": "timestamptz"}

for _row, _columns in (
    (ExecutionRow, EXECUTION_COLUMNS),
    (StepRow, STEP_COLUMNS),
    (LogRow, LOG_COLUMNS),
    (DeletedExecution, DELETED_COLUMNS),
):
    assert [f.name for f in fields(_row)] == list(_columns), f"{_row.__name__} drifted"


# Columns the fold changes on a stored row; the rest (notably the `input` payloads) are
# written once, at insert, so updates neither send nor rewrite (re-TOAST) them.
EXECUTION_UPDATED = (
    "status",
    "output",
    "error",
    "started_at",
    "finished_at",
    "cancelled_at",
    "duration_ms",
    "last_seq",
)
STEP_UPDATED = (
    "status",
    "attempts",
    "output",
    "error",
    "reused_from",
    "finished_at",
    "duration_ms",
)


def _names(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _recordset(columns: dict[str, str]) -> str:
    """One JSON array parameter read as rows `r`, however many rows there are."""
    typed = ", ".join(f'"{c}" {t}' for c, t in columns.items())
    return f"jsonb_to_recordset(%s::jsonb) AS r({typed})"


def _insert(table: str, columns: dict[str, str], key: tuple[str, ...]) -> bytes:
    names = _names(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {_recordset(columns)}"
        f" ON CONFLICT ({_names(key)}) DO NOTHING"
    ).encode()


def _update(
    table: str, columns: dict[str, str], key: tuple[str, ...], updated: tuple[str, ...], guard: str
) -> bytes:
    wanted = {c: t for c, t in columns.items() if c in key or c in updated}
    sets = ", ".join(f'"{c}" = r."{c}"' for c in updated)
    match = " AND ".join(f't."{c}" = r."{c}"' for c in key)
    return (
        f"UPDATE {table} AS t SET {sets} FROM {_recordset(wanted)} WHERE {match}"
        + (f" AND {guard}" if guard else "")
    ).encode()


def _select(table: str, columns: dict[str, str], joined: str) -> bytes:
    """Stored rows without their `input` payload, which the fold never reads."""
    names = ", ".join("NULL::jsonb AS input" if c == "input" else f't."{c}"' for c in columns)
    return f"SELECT {names} FROM {table} AS t {joined}".encode()


INSERT_EXECUTIONS = _insert("executions", EXECUTION_COLUMNS, ("id",))
UPDATE_EXECUTIONS = _update(
    "executions",
    EXECUTION_COLUMNS,
    ("id",),
    EXECUTION_UPDATED,
    guard="t.last_seq < r.last_seq",  # never move an execution backwards
)
INSERT_STEPS = _insert("execution_steps", STEP_COLUMNS, ("execution_id", "step_id"))
UPDATE_STEPS = _update(
    "execution_steps", STEP_COLUMNS, ("execution_id", "step_id"), STEP_UPDATED, guard=""
)
INSERT_LOGS = _insert("execution_logs", LOG_COLUMNS, ("execution_id", "seq"))
INSERT_DELETED = _insert("projector_deleted_executions", DELETED_COLUMNS, ("execution_id",))

SELECT_EXECUTIONS = _select("executions", EXECUTION_COLUMNS, "WHERE t.id = ANY(%s)")
SELECT_STEPS = _select(
    "execution_steps",
    STEP_COLUMNS,
    "JOIN unnest(%s::text[], %s::text[]) AS k(e, s) ON t.execution_id = k.e AND t.step_id = k.s",
)
SELECT_DELETED = _select(
    "projector_deleted_executions", DELETED_COLUMNS, "WHERE t.execution_id = ANY(%s)"
)
DELETE_EXECUTIONS = (
    b"DELETE FROM execution_logs WHERE execution_id = ANY(%s)",
    b"DELETE FROM execution_steps WHERE execution_id = ANY(%s)",
    b"DELETE FROM executions WHERE id = ANY(%s)",
)
SAVE_CHECKPOINTS = (
    b"INSERT INTO projector_checkpoints (topic, partition, next_offset)"
    b" SELECT %s, p, o FROM unnest(%s::int[], %s::bigint[]) AS c(p, o)"
    b" ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
)
NOTIFY = b"SELECT pg_notify(%s, n) FROM unnest(%s::text[]) AS n"
LOCK_CHECKPOINTS = (
    b"SELECT partition, next_offset FROM projector_checkpoints"
    b" WHERE topic = %s AND partition = ANY(%s) ORDER BY partition FOR UPDATE"
)

# Postgres text and jsonb cannot hold U+0000; an event carrying one must not block its
# partition, so it is stored as U+FFFD. The lookbehind skips an escaped backslash + "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def dumps(value: Any) -> bytes:
    """JSON for Postgres: orjson (dataclasses and datetimes natively), NUL made storable."""
    data = orjson.dumps(value)
    if b"\\u0000" in data:
        data = _NUL_ESCAPE.sub(rb"\1\\ufffd", data)
    return data


def schema_conninfo(database_url: str, schema: str) -> str:
    """The connection string with `search_path` set to the read model's schema."""
    return make_conninfo(database_url, options=f"-csearch_path={check_schema_name(schema)}")


async def prepare_schema(database_url: str, schema: str, *, fresh: bool = False) -> None:
    """Create the schema (dropped first when `fresh`) and apply the read-model migrations."""
    name = sql.Identifier(check_schema_name(schema))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if fresh:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
    await migrate(
        schema_conninfo(database_url, schema),
        f"projector:{schema}",
        files("jobsprint.projector") / "migrations",
    )


async def connect(database_url: str, schema: str) -> Connection:
    """A connection to the read model's schema; transactions are explicit."""
    conn = await psycopg.AsyncConnection.connect(
        schema_conninfo(database_url, schema), autocommit=True
    )
    set_json_loads(orjson.loads, conn)
    return conn


async def lock_checkpoints(
    conn: Connection, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """The stored next offsets of these partitions, locked until the transaction ends, so
    two consumers that both believe they own a partition apply its events one at a time."""
    cur = await conn.execute(LOCK_CHECKPOINTS, (topic, list(partitions)))
    return {p: o for p, o in await cur.fetchall()}


async def lock_and_load(
    conn: Connection,
    topic: str,
    partitions: Sequence[int],
    execution_ids: Sequence[str],
    step_keys: Sequence[tuple[str, str]],
) -> tuple[dict[int, int], Projection]:
    """`lock_checkpoints`, then `load_projection`: every statement is sent before the first
    answer is read, so in a pipeline they cost one round trip. The loads stay separate
    statements after the lock: each reads a snapshot taken once the lock is held, so they
    see what the previous owner of a partition committed."""
    locked = await conn.execute(LOCK_CHECKPOINTS, (topic, list(partitions)))
    loading = await _send_loads(conn, execution_ids, step_keys)
    stored = {p: o for p, o in await locked.fetchall()}
    return stored, await _read_loads(*loading)


async def read_checkpoints(conn: Connection, topic: str) -> dict[int, int]:
    """partition -> next offset to read, for every partition with a checkpoint."""
    cur = await conn.execute(
        "SELECT partition, next_offset FROM projector_checkpoints WHERE topic = %s", (topic,)
    )
    return {p: o for p, o in await cur.fetchall()}


async def load_projection(
    conn: Connection, execution_ids: Sequence[str], step_keys: Sequence[tuple[str, str]]
) -> Projection:
    """The stored rows of these executions and steps (without `input`), and which of the
    executions were deleted."""
    return await _read_loads(*await _send_loads(conn, execution_ids, step_keys))


_Loads = tuple[psycopg.AsyncCursor[Any], psycopg.AsyncCursor[Any] | None, psycopg.AsyncCursor[Any]]


async def _send_loads(
    conn: Connection, execution_ids: Sequence[str], step_keys: Sequence[tuple[str, str]]
) -> _Loads:
    """Send the loads without reading an answer. Deleted markers are asked for every
    execution, not only those without a row, so that query need not wait for the first."""
    ids = list(execution_ids)
    executions = await conn.execute(SELECT_EXECUTIONS, (ids,))
    steps = None
    if step_keys:
        keys = ([e for e, _ in step_keys], [s for _, s in step_keys])
        steps = await conn.execute(SELECT_STEPS, keys)
    deleted = await conn.execute(SELECT_DELETED, (ids,))
    return executions, steps, deleted


async def _read_loads(
    executions: psycopg.AsyncCursor[Any],
    steps: psycopg.AsyncCursor[Any] | None,
    deleted: psycopg.AsyncCursor[Any],
) -> Projection:
    # columns come in field order (checked above): positional construction is the fast one
    rows = [ExecutionRow(*row) for row in await executions.fetchall()]
    step_rows = [StepRow(*row) for row in await steps.fetchall()] if steps is not None else []
    found = {e.id for e in rows}
    markers = [DeletedExecution(*row) for row in await deleted.fetchall()]
    # an execution with a row is not deleted, whatever a marker says
    return Projection(rows, step_rows, [d for d in markers if d.execution_id not in found])


async def write_changes(
    conn: Connection,
    changes: Changes,
    *,
    topic: str = "",
    positions: Mapping[int, int] | None = None,
    notifications: Sequence[str] = (),
) -> None:
    """Write a fold's rows, the partitions' next offsets (`positions` of `topic`) and the
    notifications of finished executions as ONE statement: each write is a data-modifying
    WITH query, all run to completion whatever the main query reads. They never touch the
    same row (a fold's `changed` rows are stored ones, its `new` rows are not, and a deleted
    execution has neither), so that they share one snapshot changes nothing. Postgres
    delivers the notifications only if the transaction commits; a value it refuses fails
    the whole statement."""

    def rows(values: Sequence[object]) -> Jsonb:
        return Jsonb(values, dumps=dumps)

    parts: list[tuple[bytes, tuple[Any, ...]]] = []
    if changes.deleted:
        gone = [d.execution_id for d in changes.deleted]
        parts += [(statement, (gone,)) for statement in DELETE_EXECUTIONS]
        parts.append((INSERT_DELETED, (rows(changes.deleted),)))
    if changes.new_executions:
        parts.append((INSERT_EXECUTIONS, (rows(changes.new_executions),)))
    if changes.changed_executions:
        parts.append((UPDATE_EXECUTIONS, (rows(changes.changed_executions),)))
    if changes.new_steps:
        parts.append((INSERT_STEPS, (rows(changes.new_steps),)))
    if changes.changed_steps:
        parts.append((UPDATE_STEPS, (rows(changes.changed_steps),)))
    if changes.logs:
        parts.append((INSERT_LOGS, (rows(changes.logs),)))
    if positions:
        parts.append((SAVE_CHECKPOINTS, (topic, list(positions), list(positions.values()))))
    if notifications:
        parts.append((NOTIFY, (NOTIFY_CHANNEL, list(notifications))))
    if parts:
        query = _with_queries(tuple(statement for statement, _ in parts))
        await conn.execute(query, [value for _, values in parts for value in values])


@cache
def _with_queries(statements: tuple[bytes, ...]) -> bytes:
    """`WITH w0 AS (a), w1 AS (b) c` for statements (a, b, c); the same bytes for the same
    statements, so psycopg prepares each combination once."""
    *queries, main = statements
    if not queries:
        return main
    return (
        b"WITH " + b", ".join(b"w%d AS (%s)" % (i, q) for i, q in enumerate(queries)) + b" " + main
    )
