"""Benchmark of the execution metrics query (GET /v1/executions/metrics) over chDB.

    python bench/metrics_query.py /tmp/bench-chdb [--rows 10000000] [--runs 20] [--reuse]

Generates N executions straight into the `executions` table (the loader's schema and row
format, bulk-made by `INSERT … SELECT FROM numbers(N)`) and the finished ones into
`finished_executions` (the rows the loader writes there for them), merges both as a
long-running service's tables would be, adds a tail of recent unmerged updates (newer
versions of recent executions, in many small inserts, to both tables as the loader writes
them), then times the API's own `execution_metrics` (both of its SQL reads and the response
shaping) for several filters and prints p50/p95 per filter as JSON.

With --reuse, data generated before is kept (a folder from before `finished_executions`
existed gets it filled by `create_schema`, as the service's own folder would).

Shape of the data: 20 workspaces, one of them holding half of all executions; 50 workflows
per workspace; creation times uniform over the 90 days before --now; 88% success, 8% error,
3% cancelled, 1% still running; log-normal durations (median about 1.8 s); 0.1% deleted.
Execution ids sort by creation time like real ones (`exec_` + hex ms + sequence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobsprint.metrics.clickhouse import AsyncClickHouse, ChdbClickHouse
from jobsprint.metrics.queries import MetricsQuery, execution_metrics
from jobsprint.metrics.schema import (
    EXECUTION_COLUMNS,
    FINISHED_COLUMNS,
    FINISHED_FROM_EXECUTIONS,
    FINISHED_TABLE,
    create_schema,
)

WORKSPACES = 20
WORKFLOWS = 50
DAYS = 90


def generate_sql(database: str, rows: int, now_ms: int) -> str:
    span_ms = DAYS * 86_400_000
    return f"""
INSERT INTO {database}.executions ({", ".join(EXECUTION_COLUMNS)})
SELECT
    workspace_id,
    concat('exec_', leftPad(lower(hex(created_ms)), 12, '0'), leftPad(toString(number), 14, '0'))
        AS execution_id,
    if(status IN ('success', 'error', 'cancelled'), 10, 2) AS version,
    concat('wf_', workspace_id, '_', toString(cityHash64(number, 2) % {WORKFLOWS})) AS workflow_id,
    concat('Workflow ', toString(cityHash64(number, 2) % {WORKFLOWS})) AS workflow_name,
    1 AS workflow_version,
    status,
    if(cityHash64(number, 4) % 3 = 0, 'webhook', 'api') AS triggered_by,
    NULL AS original_execution_id,
    fromUnixTimestamp64Milli(created_ms, 'UTC') AS created_at,
    fromUnixTimestamp64Milli(created_ms + 3, 'UTC') AS started_at,
    if(status = 'running', NULL, fromUnixTimestamp64Milli(created_ms + duration, 'UTC'))
        AS finished_at,
    if(status = 'running', NULL, duration) AS duration_ms,
    if(status = 'error', ['timeout', 'http_status', 'step_failed'][cityHash64(number, 5) % 3 + 1],
       NULL) AS error_code,
    if(status = 'error', 'failed', NULL) AS error_message,
    if(status = 'error', 'node_1', NULL) AS error_step_id,
    toUInt8(cityHash64(number, 6) % 1000 = 0) AS deleted
FROM (
    SELECT
        number,
        {now_ms} - {span_ms} + intDiv(number * {span_ms}, {rows}) AS created_ms,
        if(cityHash64(number, 1) % 2 = 0, 'ws_big',
           concat('ws_', toString(cityHash64(number, 1) % {WORKSPACES - 1}))) AS workspace_id,
        multiIf(cityHash64(number, 3) % 100 < 88, 'success',
                cityHash64(number, 3) % 100 < 96, 'error',
                cityHash64(number, 3) % 100 < 99, 'cancelled', 'running') AS status,
        toUInt64(least(randLogNormal(7.5, 1.0), 3600000)) AS duration
    FROM numbers({rows})
)
"""


def finished_sql(database: str, where: str = "1", version: str = "version") -> str:
    """The finished_executions rows of the executions rows matching `where`: what the loader
    writes for them (finished_row), deleted ones included."""
    return f"""
INSERT INTO {database}.{FINISHED_TABLE} ({", ".join(FINISHED_COLUMNS)})
SELECT * REPLACE ({version} AS version) FROM (
    SELECT {FINISHED_FROM_EXECUTIONS} FROM {database}.executions
    WHERE status IN ('success', 'error') AND {where}
)
SETTINGS max_partitions_per_insert_block = 0
"""


def recent_updates_sql(database: str, since_ms: int, version: int, part: int, parts: int) -> str:
    """Newer versions of executions created since `since_ms` (one slice of them), as the loader
    writes when they finish: unmerged parts overlapping the merged ones. The loader writes
    the finished_executions rows first (see finished_sql), then these."""
    columns = ", ".join(EXECUTION_COLUMNS)
    return f"""
INSERT INTO {database}.executions ({columns})
SELECT * REPLACE ({version} AS version)
FROM {database}.executions
WHERE {recent_where(since_ms, part, parts)}
"""


def recent_where(since_ms: int, part: int, parts: int) -> str:
    return (
        f"created_at >= fromUnixTimestamp64Milli({since_ms}, 'UTC')"
        f" AND cityHash64(execution_id) % {parts} = {part}"
    )


def filters(now: datetime) -> dict[str, MetricsQuery]:
    return {
        "big workspace, 30 days, day": MetricsQuery(
            "ws_big", None, now - timedelta(days=30), now, "day"
        ),
        "big workspace, one workflow, 30 days, day": MetricsQuery(
            "ws_big", "wf_ws_big_7", now - timedelta(days=30), now, "day"
        ),
        "big workspace, 7 days, hour": MetricsQuery(
            "ws_big", None, now - timedelta(days=7), now, "hour"
        ),
        "big workspace, 24 hours, hour": MetricsQuery(
            "ws_big", None, now - timedelta(days=1), now, "hour"
        ),
        "big workspace, 90 days, week": MetricsQuery(
            "ws_big", None, now - timedelta(days=90), now, "week"
        ),
        "small workspace, 30 days, day": MetricsQuery(
            "ws_3", None, now - timedelta(days=30), now, "day"
        ),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    now = datetime.fromisoformat(args.now).astimezone(UTC)
    now_ms = int(now.timestamp() * 1000)
    ch = AsyncClickHouse(ChdbClickHouse(Path(args.folder)))
    db = args.database
    report: dict[str, object] = {
        "rows": args.rows,
        "runs": args.runs,
        "now": now.isoformat(),
        "cpus": os.cpu_count(),
    }
    [[existing]] = await ch.query(
        f"SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'executions'"
    )
    if existing:
        [[stored]] = await ch.query(f"SELECT count() FROM {db}.executions FINAL")
    if args.reuse and existing and stored >= args.rows * 0.99:
        started = time.perf_counter()
        create_schema(ch.sync, db)  # fills finished_executions in a folder from before it
        report["schema_s"] = round(time.perf_counter() - started, 1)
    else:
        started = time.perf_counter()
        await ch.command(f"DROP DATABASE IF EXISTS {db}")
        create_schema(ch.sync, db)
        await ch.command(generate_sql(db, args.rows, now_ms))
        await ch.command(finished_sql(db))
        await ch.command(f"OPTIMIZE TABLE {db}.executions FINAL")
        await ch.command(f"OPTIMIZE TABLE {db}.{FINISHED_TABLE} FINAL")
        since_ms = now_ms - 2 * 3_600_000
        for part in range(args.recent_parts):
            recent = recent_where(since_ms, part, args.recent_parts)
            await ch.command(finished_sql(db, recent, "11"))
            await ch.command(recent_updates_sql(db, since_ms, 11, part, args.recent_parts))
        report["generate_s"] = round(time.perf_counter() - started, 1)
    for table in ("executions", FINISHED_TABLE):
        [[rows, parts]] = await ch.query(
            f"SELECT sum(rows), count() FROM system.parts WHERE database = '{db}'"
            f" AND table = '{table}' AND active"
        )
        if table == "executions":
            report["stored_rows"] = rows
            report["active_parts"] = parts
        else:
            report["finished_rows"] = rows
            report["finished_active_parts"] = parts
    report["load_average_1m_before"] = round(os.getloadavg()[0], 2)
    results: dict[str, object] = {}
    for name, query in filters(now).items():
        for _ in range(2):  # warm caches
            data = await execution_metrics(ch, db, query)
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            data = await execution_metrics(ch, db, query)
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        results[name] = {
            "p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[max(0, round(0.95 * len(timings)) - 1)], 1),
            "max_ms": round(timings[-1], 1),
            "totalExecutions": data["totalExecutions"],
            "buckets": len(data["timeSeries"]),  # type: ignore[arg-type]
        }
        print(name, results[name], file=sys.stderr, flush=True)
    report["queries"] = results
    report["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # other work on the machine
    ch.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="chDB data folder (created; not the service's)")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database", default="bench")
    parser.add_argument("--now", default="2026-11-27T12:00:00Z")
    parser.add_argument(
        "--recent-parts", type=int, default=20, help="small inserts of recent updates left unmerged"
    )
    parser.add_argument("--reuse", action="store_true", help="keep data generated before")
    report = asyncio.run(run(parser.parse_args()))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
