"""The ClickHouse tables (docs/analytics.md describes them for analysts).

`executions` and `steps` hold one row per execution and per step once merged: every write is
the row's whole current state, versioned by the `seq` of the last event folded into it, so
ReplacingMergeTree keeps the newest and a redelivered event rewrites an identical row. The
`deleted` flag is the engine's is_deleted column: a deleted execution's newest row carries
it and `FINAL` hides the execution. Queries read with `FINAL` (or `argMax` by version).

Layout of `executions`, chosen for the metrics query (measured in bench/metrics_query.py):

* ORDER BY (workspace_id, workflow_id, execution_id). The workflow never changes for an
  execution and every row of one carries it (from ExecutionRequested, its first event), so
  all versions share a sorting key, as ReplacingMergeTree needs. A workflow filter then
  narrows the primary key range; the loader's lookups by execution id use the minmax index
  on `execution_id` instead.
* PARTITION BY day of creation, which never changes for an execution either: all versions of
  a row share a partition, so `FINAL` merges per partition
  (`do_not_merge_across_partitions_select_final`) and skips every partition already merged
  into one part: only the newest days pay for merging at query time.
* Within a workflow, time-ordered execution ids sort rows by creation time, so finishing
  times are nearly sorted too and a minmax index skips the granules outside a query's range.
  It indexes `finished_or_created_at`, a materialized non-Nullable copy of `finished_at`: a
  minmax index over a Nullable column prunes nothing once a granule holds a NULL. That index
  is used under FINAL without "exact mode": the newest row of an execution always carries
  the execution's `finished_at`, so a granule it skips only holds older versions (which
  lose to the newest anyway) or executions that did not finish in the range.
"""

from __future__ import annotations

from jobsprint.metrics.clickhouse import ClickHouse

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

CHECKPOINT_COLUMNS = ("topic", "partition", "next_offset", "updated_at")


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


def create_schema(ch: ClickHouse, database: str) -> None:
    """Create the database and tables when missing (idempotent)."""
    for statement in ddl(database):
        ch.command(statement)
