"""The ClickHouse tables (docs/analytics.md describes them for analysts).

`executions` and `steps` hold one row per execution and per step once merged: every write is
the row's whole current state, versioned by the `seq` of the last event folded into it, so
ReplacingMergeTree keeps the newest and a redelivered event rewrites an identical row. The
`deleted` flag is the engine's is_deleted column: a deleted execution's newest row carries
it and `FINAL` hides the execution. Queries read with `FINAL` (or `argMax` by version).

`executions` is laid out for analysts and the loader's lookups: ORDER BY (workspace_id,
workflow_id, execution_id), PARTITION BY day of creation (never changes for an execution, so
`FINAL` merges per partition), and a minmax index on `finished_or_created_at` (a
materialized non-Nullable copy of `finished_at`: a minmax index over a Nullable column
prunes nothing once a granule holds a NULL).

`finished_executions` is what the metrics query reads (measured with
bench/metrics_query.py, 10M executions: the worst query, 4.8M executions over 90 days, went
from 345 to 221 ms of CPU, p95 299 to 167 ms): only the columns it needs, one row per
execution that finished with `success` or `error`, sorted so that a workspace's time range
is a few primary key ranges. The loader writes it from the same fold as `executions`
(`loader.Fold.finished_rows`):

* ORDER BY (toDate(finished_at), workspace_id, finished_at, execution_id). ReplacingMergeTree
  needs every version of a row to have the same key; `finished_at` is the same in every row
  the loader writes for one finishing (a deletion writes the row again with `deleted = 1`),
  and should an execution stop counting under that time otherwise (a second terminal event
  with a new status or time), the loader writes a `deleted` row under the old one.
  The day comes first because of `FINAL`: parts the loader just wrote overlap the merged
  parts only in today's key range, so only today's rows are merged at query time. With the
  workspace first, every fresh part (all workspaces, the last seconds) overlapped the whole
  month of every workspace sorting between its first and last, and `FINAL` merged that.
  (A workflow filter reads the workspace's rows and drops the others' workflows: 52 ms p95
  for one workflow over 30 days, 46 with the old layout.)
* PARTITION BY month of `finished_at` (part of the key, so all versions of a row share a
  partition and `FINAL` merges per partition, skipping partitions merged into one part).
  Daily partitions were slower: a 90-day query then opens about 90 parts.
* `finished_at` and `duration_ms` are not Nullable and T64-compressed: the query reads them
  for every row in range, and T64 decompresses about three times faster than plain LZ4 here.
"""

from __future__ import annotations

from jobsprint.metrics.clickhouse import INSERT_SETTINGS, ClickHouse

EXECUTION_COLUMNS = (
    "workspace_id",
    "execution_id",
    "version",
    "workflow_id",
    "workflow_name",
    "workflow_version",
    "status",
    "triggered_by",
    "original_execution_id",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "error_code",
    "error_message",
    "error_step_id",
    "deleted",
)

STEP_COLUMNS = (
    "workspace_id",
    "execution_id",
    "step_id",
    "version",
    "workflow_id",
    "execution_created_at",
    "step_name",
    "step_type",
    "position",
    "status",
    "attempts",
    "failed_attempts",
    "reused_from",
    "started_at",
    "finished_at",
    "duration_ms",
    "error_code",
    "error_message",
    "deleted",
)

FINISHED_COLUMNS = (
    "workspace_id",
    "finished_at",
    "workflow_id",
    "execution_id",
    "version",
    "status",
    "duration_ms",
    "deleted",
)

CHECKPOINT_COLUMNS = ("topic", "partition", "next_offset", "updated_at")

FINISHED_TABLE = "finished_executions"
# FINISHED_COLUMNS as expressions over a finished `executions` row (the backfill, the bench).
FINISHED_FROM_EXECUTIONS = (
    "workspace_id, assumeNotNull(finished_at), workflow_id, execution_id, version, status,"
    " assumeNotNull(duration_ms), deleted"
)


def ddl(database: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"""
CREATE TABLE IF NOT EXISTS {database}.executions (
    workspace_id LowCardinality(String),
    execution_id String,
    version UInt64 COMMENT 'seq of the last event folded into this row',
    workflow_id LowCardinality(String),
    workflow_name String,
    workflow_version UInt32,
    status LowCardinality(String) COMMENT 'pending, running, success, error, cancelled',
    triggered_by LowCardinality(String) COMMENT 'api, webhook, retry',
    original_execution_id Nullable(String) COMMENT 'the execution a retry continues',
    created_at DateTime64(3, 'UTC'),
    started_at Nullable(DateTime64(3, 'UTC')),
    finished_at Nullable(DateTime64(3, 'UTC')) COMMENT 'success, error or cancelled at',
    duration_ms Nullable(UInt64) COMMENT 'from ExecutionSucceeded/Failed/Cancelled',
    error_code LowCardinality(Nullable(String)),
    error_message Nullable(String),
    error_step_id Nullable(String),
    deleted UInt8 COMMENT '1: the execution was deleted; FINAL hides it',
    finished_or_created_at DateTime64(3, 'UTC') MATERIALIZED ifNull(finished_at, created_at)
        COMMENT 'not NULL, so its minmax index prunes (one on a Nullable column cannot)',
    INDEX finished_or_created_at_minmax finished_or_created_at TYPE minmax GRANULARITY 1,
    INDEX execution_id_minmax execution_id TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMMDD(created_at)
ORDER BY (workspace_id, workflow_id, execution_id)
COMMENT 'one row per execution (read with FINAL)'
""",
        f"""
CREATE TABLE IF NOT EXISTS {database}.steps (
    workspace_id LowCardinality(String),
    execution_id String,
    step_id String,
    version UInt64 COMMENT 'seq of the last event folded into this row',
    workflow_id LowCardinality(String),
    execution_created_at DateTime64(3, 'UTC'),
    step_name String,
    step_type LowCardinality(String),
    position UInt32,
    status LowCardinality(String) COMMENT 'running, success, error, cancelled',
    attempts UInt32,
    failed_attempts UInt32,
    reused_from Nullable(String) COMMENT 'execution whose output a retry reused',
    started_at Nullable(DateTime64(3, 'UTC')) COMMENT 'first attempt started at',
    finished_at Nullable(DateTime64(3, 'UTC')) COMMENT 'last attempt finished at',
    duration_ms Nullable(UInt64) COMMENT 'of the last attempt',
    error_code LowCardinality(Nullable(String)) COMMENT 'of the last failed attempt',
    error_message Nullable(String),
    deleted UInt8 COMMENT '1: the execution was deleted; FINAL hides it'
) ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(execution_created_at)
ORDER BY (workspace_id, execution_id, step_id)
COMMENT 'one row per step of an execution (read with FINAL)'
""",
        f"""
CREATE TABLE IF NOT EXISTS {database}.checkpoints (
    topic String,
    partition UInt32,
    next_offset UInt64 COMMENT 'first offset not yet loaded',
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (topic, partition)
COMMENT 'where the loader resumes, per events partition'
""",
    ]


def finished_ddl(database: str, table: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {database}.{table} (
    workspace_id LowCardinality(String),
    finished_at DateTime64(3, 'UTC') CODEC(T64, LZ4),
    workflow_id LowCardinality(String),
    execution_id String,
    version UInt64 COMMENT 'the version of the executions row this row was written with',
    status LowCardinality(String) COMMENT 'success or error',
    duration_ms UInt64 CODEC(T64, LZ4),
    deleted UInt8 COMMENT '1: not counted (deleted, or finished otherwise since); FINAL hides it'
) ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(finished_at)
ORDER BY (toDate(finished_at), workspace_id, finished_at, execution_id)
COMMENT 'one row per execution finished with success or error (read with FINAL)'
"""


def create_schema(ch: ClickHouse, database: str) -> None:
    """Create the database and tables when missing (idempotent). A database made before
    `finished_executions` existed gets that table filled from `executions`."""
    for statement in ddl(database):
        ch.command(statement)
    [[exists]] = ch.query(f"EXISTS TABLE {database}.{FINISHED_TABLE}")
    if not exists:
        backfill_finished(ch, database)


def backfill_finished(ch: ClickHouse, database: str) -> None:
    """Create `finished_executions` from the newest row of every finished, undeleted
    execution in `executions` (empty on a new database). Filled under another name and
    renamed at the end, so a crash midway leaves no half-filled table behind: the next
    start fills it again. Merged before it is used: the insert leaves many parts, each
    spanning every day, and `FINAL` would merge them on every query until the background
    merges caught up (measured: 600 instead of 150 ms for 90 days of 10M executions)."""
    filling = f"{database}.{FINISHED_TABLE}_filling"
    ch.command(f"DROP TABLE IF EXISTS {filling}")
    ch.command(finished_ddl(database, f"{FINISHED_TABLE}_filling"))
    ch.command(
        f"INSERT INTO {filling} ({', '.join(FINISHED_COLUMNS)})"
        f" SELECT {FINISHED_FROM_EXECUTIONS} FROM {database}.executions FINAL"
        " WHERE status IN ('success', 'error')"
        f" SETTINGS {', '.join(f'{k} = {v}' for k, v in INSERT_SETTINGS.items())}"
    )
    ch.command(f"OPTIMIZE TABLE {filling} FINAL")
    ch.command(f"RENAME TABLE {filling} TO {database}.{FINISHED_TABLE}")
