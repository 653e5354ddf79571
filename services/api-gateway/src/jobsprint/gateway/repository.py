"""Postgres access: the gateway's own tables (read and write) and the projector's read
model (read only). Every function is one short statement or transaction on the pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from jobsprint.events import utcnow
from jobsprint.events.ids import new_id
from jobsprint.gateway.errors import Conflict
from jobsprint.gateway.filters import ExecutionFilters
from jobsprint.gateway.pagination import PageRequest
from jobsprint.gateway.tokens import hash_token, new_token

Row = dict[str, Any]

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# an unpublished request row this old was left by a gateway that died before producing
ABANDONED_AFTER = timedelta(seconds=60)
IDEMPOTENT_WAIT_S = 30.0

_EXECUTION_COLUMNS = (
    "id, workspace_id, workflow_id, workflow_name, workflow_version, status, triggered_by,"
    " input, output, error, original_execution_id, from_step, timeout_s, created_at,"
    " started_at, finished_at, cancelled_at, duration_ms, last_seq"
)
_STEP_COLUMNS = (
    "step_id, step_name, step_type, status, position, started_seq, attempts, input, output,"
    " error, reused_from, started_at, finished_at, duration_ms"
)
_LOG_COLUMNS = "seq, time, level, message, step_id, data"
_STEP_TIMES = ("started_at", "finished_at")
_LOG_TIMES = ("time",)
# the execution, and its steps and logs as JSON arrays (text, read with orjson: _rows_of)
_DETAILS_QUERY = (
    f"SELECT {_EXECUTION_COLUMNS},"
    " (SELECT coalesce(json_agg(s ORDER BY s.started_seq), '[]')::text FROM"
    f" (SELECT {_STEP_COLUMNS} FROM execution_steps WHERE execution_id = e.id) s) AS steps_json,"
    " (SELECT coalesce(json_agg(l ORDER BY l.seq), '[]')::text FROM"
    f" (SELECT {_LOG_COLUMNS} FROM execution_logs WHERE execution_id = e.id) l) AS logs_json"
    " FROM executions e WHERE id = %s AND workspace_id = %s"
)
_LIST_COLUMNS = (
    "id, workflow_id, workflow_name, workflow_version, status, triggered_by, input,"
    " original_execution_id, created_at, started_at, finished_at, cancelled_at, duration_ms"
)
# an accepted request, shaped like a list row of the read model
_REQUEST_LIST_COLUMNS = (
    "id, workflow_id, workflow_name, workflow_version, 'pending' AS status, triggered_by,"
    " input, original_execution_id, requested_at AS created_at,"
    " NULL::timestamptz AS started_at, NULL::timestamptz AS finished_at,"
    " NULL::timestamptz AS cancelled_at, NULL::int AS duration_ms"
)
# an accepted, produced request whose execution the projector has not written (nor deleted)
_IN_FLIGHT = (
    "NOT r.projected AND r.published_at IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = r.id)"
    " AND NOT EXISTS (SELECT 1 FROM projector_deleted_executions d WHERE d.execution_id = r.id)"
)
_WORKFLOW_COLUMNS = (
    "w.id, w.workspace_id, w.name, w.description, w.current_version, w.trigger_type,"
    " w.hook_token, w.created_at, w.updated_at, v.definition"
)


@dataclass(frozen=True)
class ExecutionRequest:
    """An accepted execute/retry/webhook request, written before its command is produced."""

    id: str
    workspace_id: str
    workflow_id: str
    workflow_name: str
    workflow_version: int
    triggered_by: str
    input: Any
    requested_at: datetime
    original_execution_id: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> ExecutionRequest:
        return cls(
            id=row["id"],
            workspace_id=row["workspace_id"],
            workflow_id=row["workflow_id"],
            workflow_name=row["workflow_name"],
            workflow_version=row["workflow_version"],
            triggered_by=row["triggered_by"],
            input=row["input"],
            requested_at=row["requested_at"],
            original_execution_id=row["original_execution_id"],
        )

    def same_request(self, other: ExecutionRequest) -> bool:
        """Whether a replay under the same idempotency key asks for the same thing."""
        return (
            self.workflow_id == other.workflow_id
            and self.triggered_by == other.triggered_by
            and self.original_execution_id == other.original_execution_id
            and _canonical(self.input) == _canonical(other.input)
        )


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class ExecutionDetails:
    """What `GET /v1/executions/{id}` shows: the read model's row with its steps and logs,
    else the published request of an execution not projected yet, else nothing."""

    row: Row | None
    steps: list[Row]
    logs: list[Row]
    request: Row | None


class Repository:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def _one(self, query: str | sql.Composed, params: Sequence[Any]) -> Row | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            row: Row | None = await cur.fetchone()
            return row

    async def _all(self, query: str | sql.Composed, params: Sequence[Any]) -> list[Row]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            found: list[Row] = await cur.fetchall()
            return found

    async def ping(self, timeout_s: float = 2.0) -> None:
        async with self.pool.connection(timeout=timeout_s) as conn:
            await conn.execute("SELECT 1")

    # --- workspaces and tokens ------------------------------------------------------------

    async def ensure_workspace(self, name: str) -> str:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO workspaces (id, name) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (new_id("ws"), name),
            )
            cur = await conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,))
            row = await cur.fetchone()
            assert row is not None
            return str(row[0])

    async def create_token(
        self, workspace_id: str, scopes: Sequence[str], name: str | None
    ) -> tuple[str, str]:
        """A new token of the workspace: (token id, the token itself, shown once)."""
        token = new_token()
        token_id = new_id("tok")
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO api_tokens (id, workspace_id, token_hash, scopes, name)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token_id, workspace_id, hash_token(token), list(scopes), name),
            )
        return token_id, token

    async def revoke_token(self, token_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
                (token_id,),
            )
            return bool(cur.rowcount == 1)

    async def list_tokens(self, workspace_name: str) -> list[Row] | None:
        """The workspace's tokens (never their hashes), or None when there is no workspace."""
        ws = await self._one("SELECT id FROM workspaces WHERE name = %s", (workspace_name,))
        if ws is None:
            return None
        return await self._all(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_tokens"
            " WHERE workspace_id = %s ORDER BY created_at, id",
            (ws["id"],),
        )

    async def token_by_hash(self, token_hash: bytes) -> Row | None:
        return await self._one(
            "SELECT id, workspace_id, token_hash, scopes, revoked_at FROM api_tokens"
            " WHERE token_hash = %s",
            (token_hash,),
        )

    # --- workflows ------------------------------------------------------------------------

    async def create_workflow(
        self,
        *,
        workflow_id: str,
        workspace_id: str,
        definition: dict[str, Any],
        hook_token: str | None,
        now: datetime,
    ) -> Row:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO workflows (id, workspace_id, name, description, current_version,"
                " trigger_type, hook_token, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s)",
                (
                    workflow_id,
                    workspace_id,
                    definition["name"],
                    definition.get("description"),
                    definition["trigger"]["type"],
                    hook_token,
                    now,
                    now,
                ),
            )
            await conn.execute(
                "INSERT INTO workflow_versions (workflow_id, version, definition, created_at)"
                " VALUES (%s, 1, %s, %s)",
                (workflow_id, Jsonb(definition), now),
            )
        row = await self.workflow(workspace_id, workflow_id)
        assert row is not None
        return row

    async def workflow(self, workspace_id: str, workflow_id: str) -> Row | None:
        """The workflow with its current definition; None when absent, deleted or not the
        workspace's."""
        return await self._one(
            f"SELECT {_WORKFLOW_COLUMNS} FROM workflows w"
            " JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.current_version"
            " WHERE w.id = %s AND w.workspace_id = %s AND w.deleted_at IS NULL",
            (workflow_id, workspace_id),
        )

    async def workflow_by_hook(self, hook_token: str) -> Row | None:
        return await self._one(
            f"SELECT {_WORKFLOW_COLUMNS} FROM workflows w"
            " JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.current_version"
            " WHERE w.hook_token = %s AND w.trigger_type = 'webhook' AND w.deleted_at IS NULL",
            (hook_token,),
        )

    async def workflow_version(
        self, workspace_id: str, workflow_id: str, version: int
    ) -> Row | None:
        """One version of a workflow of the workspace (deleted or not), with its definition."""
        return await self._one(
            "SELECT w.id, w.name, w.current_version, w.deleted_at, v.version, v.definition"
            " FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id"
            " WHERE w.id = %s AND w.workspace_id = %s AND v.version = %s",
            (workflow_id, workspace_id, version),
        )

    async def list_workflows(self, workspace_id: str, page: PageRequest) -> list[Row]:
        where: list[sql.Composable] = [
            sql.SQL("w.workspace_id = %s"),
            sql.SQL("w.deleted_at IS NULL"),
        ]
        params: list[Any] = [workspace_id]
        where_sql, order = _keyset(where, params, page, "w.id")
        query = sql.SQL(
            "SELECT {cols} FROM workflows w JOIN workflow_versions v"
            " ON v.workflow_id = w.id AND v.version = w.current_version"
            " WHERE {where} ORDER BY w.id {order} LIMIT %s"
        ).format(cols=sql.SQL(_WORKFLOW_COLUMNS), where=where_sql, order=order)
        return await self._all(query, [*params, page.fetch])

    async def update_workflow(
        self,
        *,
        workspace_id: str,
        workflow_id: str,
        definition: dict[str, Any],
        new_hook_token: str,
        now: datetime,
    ) -> Row | None:
        """Store `definition` as the next version. A workflow that becomes a webhook gets
        `new_hook_token`; one that stays a webhook keeps its token; one that stops being a
        webhook loses it."""
        trigger = definition["trigger"]["type"]
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE workflows SET current_version = current_version + 1, name = %s,"
                " description = %s, trigger_type = %s, updated_at = %s,"
                " hook_token = CASE WHEN %s <> 'webhook' THEN NULL"
                "   ELSE coalesce(hook_token, %s) END"
                " WHERE id = %s AND workspace_id = %s AND deleted_at IS NULL"
                " RETURNING current_version",
                (
                    definition["name"],
                    definition.get("description"),
                    trigger,
                    now,
                    trigger,
                    new_hook_token,
                    workflow_id,
                    workspace_id,
                ),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            await conn.execute(
                "INSERT INTO workflow_versions (workflow_id, version, definition, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (workflow_id, row[0], Jsonb(definition), now),
            )
        return await self.workflow(workspace_id, workflow_id)

    async def delete_workflow(self, workspace_id: str, workflow_id: str, now: datetime) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE workflows SET deleted_at = %s, updated_at = %s"
                " WHERE id = %s AND workspace_id = %s AND deleted_at IS NULL",
                (now, now, workflow_id, workspace_id),
            )
            return bool(cur.rowcount == 1)

    # --- execution requests (accepted, maybe not projected yet) ----------------------------

    async def claim_request(
        self, request: ExecutionRequest, idempotency_key: str
    ) -> tuple[ExecutionRequest, bool]:
        """Record an accepted request under its idempotency key: the first request of the
        key (per workspace, within 24 h) wins and every other gets the winner's row:
        (row, True) for the winner, (existing row, False) for a replay. A replay waits
        until the winner's command is produced; if the winner gives up (Kafka down), the
        row disappears and the replay tries to win itself."""
        deadline = time.monotonic() + IDEMPOTENT_WAIT_S
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                # a key older than the window is released: it no longer names a request
                await conn.execute(
                    "UPDATE execution_requests SET idempotency_key = NULL"
                    " WHERE workspace_id = %s AND idempotency_key = %s AND requested_at < %s",
                    (request.workspace_id, idempotency_key, utcnow() - IDEMPOTENCY_WINDOW),
                )
                if await _insert_request(conn, request, idempotency_key):
                    return request, True
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT * FROM execution_requests"
                    " WHERE workspace_id = %s AND idempotency_key = %s",
                    (request.workspace_id, idempotency_key),
                )
                existing = await cur.fetchone()
            if existing is None:
                continue  # the winner gave up between our insert and our read
            if existing["published_at"] is not None:
                return ExecutionRequest.from_row(existing), False
            if existing["requested_at"] < utcnow() - ABANDONED_AFTER:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "DELETE FROM execution_requests WHERE id = %s AND published_at IS NULL",
                        (existing["id"],),
                    )
                continue
            if time.monotonic() > deadline:
                raise Conflict(
                    "a request with this Idempotency-Key is still being processed; retry later"
                )
            await asyncio.sleep(0.05)

    async def record_published(self, request: ExecutionRequest) -> None:
        """Record a request (without idempotency key) whose command is already produced."""
        async with self.pool.connection() as conn:
            await _insert_request(conn, request, None, published=True)

    async def mark_published(self, execution_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE execution_requests SET published_at = now() WHERE id = %s",
                (execution_id,),
            )

    async def delete_request(self, execution_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM execution_requests WHERE id = %s", (execution_id,))

    async def published_request(self, workspace_id: str, execution_id: str) -> Row | None:
        return await self._one(
            "SELECT * FROM execution_requests"
            " WHERE id = %s AND workspace_id = %s AND published_at IS NOT NULL",
            (execution_id, workspace_id),
        )

    # --- read model (written by the projector) -------------------------------------------

    async def execution(self, workspace_id: str, execution_id: str) -> Row | None:
        return await self._one(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE id = %s AND workspace_id = %s",
            (execution_id, workspace_id),
        )

    async def list_executions(
        self, workspace_id: str, filters: ExecutionFilters, page: PageRequest
    ) -> list[Row]:
        """One page, walking the (workspace_id[, workflow_id][, status], id DESC) index, merged
        with the accepted requests the projector has not seen yet (listed as `pending`)."""
        query, params = _list_query(
            "executions", _LIST_COLUMNS, workspace_id, filters, page, status=filters.status
        )
        if filters.status in (None, "pending"):
            in_flight, more = _list_query(
                "execution_requests r",
                _REQUEST_LIST_COLUMNS,
                workspace_id,
                filters,
                page,
                condition=_IN_FLIGHT,
            )
            query = sql.SQL("({}) UNION ALL ({}) ORDER BY id {} LIMIT %s").format(
                query, in_flight, sql.SQL("ASC" if page.ascending else "DESC")
            )
            params = [*params, *more, page.fetch]
        return await self._all(query, params)

    async def steps(self, execution_id: str) -> list[Row]:
        return await self._all(
            f"SELECT {_STEP_COLUMNS} FROM execution_steps"
            " WHERE execution_id = %s ORDER BY started_seq",
            (execution_id,),
        )

    async def logs(
        self, execution_id: str, *, level: str | None = None, step_id: str | None = None
    ) -> list[Row]:
        where: list[sql.Composable] = [sql.SQL("execution_id = %s")]
        params: list[Any] = [execution_id]
        if level is not None:
            where.append(sql.SQL("level = %s"))
            params.append(level)
        if step_id is not None:
            where.append(sql.SQL("step_id = %s"))
            params.append(step_id)
        query = sql.SQL(
            f"SELECT {_LOG_COLUMNS} FROM execution_logs WHERE {{where}} ORDER BY seq"
        ).format(where=sql.SQL(" AND ").join(where))
        return await self._all(query, params)

    async def execution_details(self, workspace_id: str, execution_id: str) -> ExecutionDetails:
        """The execution with its steps and logs, in ONE statement (so one snapshot and one
        round trip: pollers call this hundreds of times a second); else the published
        request of an execution the projector has not written yet (a second statement)."""
        row = await self._one(_DETAILS_QUERY, (execution_id, workspace_id))
        if row is None:
            request = await self.published_request(workspace_id, execution_id)
            return ExecutionDetails(None, [], [], request)
        steps = _rows_of(row.pop("steps_json"), _STEP_TIMES)
        logs = _rows_of(row.pop("logs_json"), _LOG_TIMES)
        return ExecutionDetails(row, steps, logs, None)


def _rows_of(aggregated: str, time_columns: tuple[str, ...]) -> list[Row]:
    """Rows as `dict_row` reads them, from the JSON array `json_agg` made of them: the
    timestamps (JSON text there) back to datetimes."""
    rows: list[Row] = orjson.loads(aggregated)
    for row in rows:
        for column in time_columns:
            if row[column] is not None:
                row[column] = datetime.fromisoformat(row[column])
    return rows


async def _insert_request(
    conn: AsyncConnection[Any],
    request: ExecutionRequest,
    idempotency_key: str | None,
    *,
    published: bool = False,
) -> bool:
    cur = await conn.execute(
        "INSERT INTO execution_requests (id, workspace_id, workflow_id, workflow_name,"
        " workflow_version, triggered_by, input, original_execution_id, idempotency_key,"
        " requested_at, published_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)"
        " ON CONFLICT (workspace_id, idempotency_key) DO NOTHING",
        (
            request.id,
            request.workspace_id,
            request.workflow_id,
            request.workflow_name,
            request.workflow_version,
            request.triggered_by,
            None if request.input is None else Jsonb(request.input),
            request.original_execution_id,
            idempotency_key,
            request.requested_at,
            published,
        ),
    )
    return bool(cur.rowcount == 1)


def _list_query(
    table: str,
    columns: str,
    workspace_id: str,
    filters: ExecutionFilters,
    page: PageRequest,
    *,
    status: str | None = None,
    condition: str | None = None,
) -> tuple[sql.Composed, list[Any]]:
    """One branch of the execution list: the read model, or the in-flight requests."""
    where: list[sql.Composable] = [sql.SQL("workspace_id = %s")]
    params: list[Any] = [workspace_id]
    if condition is not None:
        where.append(sql.SQL(condition))
    if filters.workflow_id is not None:
        where.append(sql.SQL("workflow_id = %s"))
        params.append(filters.workflow_id)
    if status is not None:
        where.append(sql.SQL("status = %s"))
        params.append(status)
    if filters.id_min is not None:
        where.append(sql.SQL("id >= %s"))
        params.append(filters.id_min)
    if filters.id_below is not None:
        where.append(sql.SQL("id < %s"))
        params.append(filters.id_below)
    where_sql, order = _keyset(where, params, page, "id")
    query = sql.SQL("SELECT {cols} FROM {table} WHERE {where} ORDER BY id {order} LIMIT %s").format(
        cols=sql.SQL(columns), table=sql.SQL(table), where=where_sql, order=order
    )
    return query, [*params, page.fetch]


def _keyset(
    where: list[sql.Composable], params: list[Any], page: PageRequest, column: str
) -> tuple[sql.Composable, sql.Composable]:
    """Add the cursor bound; newest first, except `before` pages (read upwards, reversed)."""
    if page.after is not None:
        where.append(sql.SQL("{} < %s").format(sql.SQL(column)))
        params.append(page.after)
    if page.before is not None:
        where.append(sql.SQL("{} > %s").format(sql.SQL(column)))
        params.append(page.before)
    order = sql.SQL("ASC" if page.ascending else "DESC")
    return sql.SQL(" AND ").join(where), order
