"""Benchmark of the execution metrics query (GET /v1/executions/metrics) over chDB.

    python bench/metrics_query.py bench/out/chdb-metrics-replay [--rows 10000000] [--runs 20]
        [--reuse]

The data is made by bench/metrics_bulk.py the way production makes it: N executions'
generated event streams produced to the topics of prefix --prefix, then loaded into the chDB
folder by the REAL metrics service (`python -m jobsprint.metrics`, its Kafka loader) run
until its checkpoints reach the end of the topic; the history is merged as a long-running
service's would be, then the last two hours are loaded in about --recent-parts small inserts
that stay unmerged. With --reuse a build recorded in the state file
(bench/out/metrics-bulk-<prefix>.json) is reused or carried on; without it everything is
made again. Then the API's own `execution_metrics` (both of its SQL reads and the response
shaping) is timed for several filters, and p50/p95 per filter are printed as JSON with the
build's figures and the loaded tables' counts checked against the generated ones.

Shape of the data: 20 workspaces, one of them holding half of all executions; 50 workflows
per workspace (one or two steps); creation times uniform over the 90 days before --now; 88%
success, 8% error, 3% cancelled, 1% still running; log-normal durations (median about
1.8 s); 0.1% of the finished ones deleted. Ids are real time-ordered Jobsprint ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.metrics_bulk import MetricsBulk, ensure_metrics_bulk  # noqa: E402
from jobsprint.metrics.clickhouse import AsyncClickHouse, ChdbClickHouse  # noqa: E402
from jobsprint.metrics.queries import MetricsQuery, execution_metrics  # noqa: E402
from jobsprint.metrics.schema import FINISHED_TABLE  # noqa: E402


def filters(now: datetime, ids: dict[str, str]) -> dict[str, MetricsQuery]:
    big, workflow = ids["big_workspace"], ids["big_workspace_workflow"]
    return {
        "big workspace, 30 days, day": MetricsQuery(
            big, None, now - timedelta(days=30), now, "day"
        ),
        "big workspace, one workflow, 30 days, day": MetricsQuery(
            big, workflow, now - timedelta(days=30), now, "day"
        ),
        "big workspace, 7 days, hour": MetricsQuery(
            big, None, now - timedelta(days=7), now, "hour"
        ),
        "big workspace, 24 hours, hour": MetricsQuery(
            big, None, now - timedelta(days=1), now, "hour"
        ),
        "big workspace, 90 days, week": MetricsQuery(
            big, None, now - timedelta(days=90), now, "week"
        ),
        "small workspace, 30 days, day": MetricsQuery(
            ids["small_workspace"], None, now - timedelta(days=30), now, "day"
        ),
    }


def build_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What the report says about how the data was made (rates of this build, or reused)."""
    summary: dict[str, Any] = {
        "made_by": "generated event streams produced to Kafka, loaded by the real metrics "
        "service (python -m jobsprint.metrics) until its checkpoints reached the end offsets",
        "reused": state.get("reused"),
        "prefix": state["spec"]["prefix"],
        "logs_in_topic": state["spec"]["logs"],
        "expected": state.get("expected"),
    }
    for part in ("history", "tail"):
        info = state.get(part) or {}
        summary[part] = {k: v for k, v in info.items() if k not in ("end_offsets", "tally")}
        summary[part]["executions"] = (info.get("tally") or {}).get("executions")
        summary[part]["events"] = (info.get("tally") or {}).get("events")
    summary["merge_s"] = state.get("merge_s")
    summary["build_s"] = state.get("build_s")
    return summary


async def run(args: argparse.Namespace) -> dict[str, object]:
    now = datetime.fromisoformat(args.now).astimezone(UTC)
    folder = Path(args.folder).resolve()
    db = args.database
    bulk = MetricsBulk(
        folder=folder,
        now_ms=int(now.timestamp() * 1000),
        executions=args.rows,
        prefix=args.prefix,
        database=db,
        recent_inserts=args.recent_parts,
        logs=args.logs,
    )
    state = await ensure_metrics_bulk(bulk, args.bootstrap, reuse=args.reuse)
    report: dict[str, object] = {
        "rows": args.rows,
        "runs": args.runs,
        "now": now.isoformat(),
        "cpus": os.cpu_count(),
        "data": build_summary(state),
    }
    ch = AsyncClickHouse(ChdbClickHouse(folder))
    started = time.perf_counter()
    [[executions]] = await ch.query(f"SELECT count() FROM {db}.executions FINAL")
    [[finished]] = await ch.query(f"SELECT count() FROM {db}.{FINISHED_TABLE} FINAL")
    expected = state["expected"]
    check = {
        "executions_final": executions,
        "expected_executions": expected["executions"] - expected["deleted"],
        "finished_final": finished,
        "expected_finished": expected["finished"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    check["ok"] = (
        check["executions_final"] == check["expected_executions"]
        and check["finished_final"] == check["expected_finished"]
    )
    report["check"] = check
    if not check["ok"]:
        print(f"loaded counts differ from the generated ones: {check}", file=sys.stderr)
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
    for name, query in filters(now, state["ids"]).items():
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
            "buckets": len(data["timeSeries"]),
        }
        print(name, results[name], file=sys.stderr, flush=True)
    report["queries"] = results
    report["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # other work on the machine
    ch.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folder", help="chDB data folder the metrics service loads (its own; not the stack's)"
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="executions to generate")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per filter")
    parser.add_argument("--database", default="bench", help="ClickHouse database in the folder")
    parser.add_argument("--now", default="2026-11-27T12:00:00Z", help="end of the 90 days")
    parser.add_argument("--prefix", default="benchmetrics", help="topic prefix of the bulk events")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument(
        "--recent-parts",
        type=int,
        default=20,
        help="about how many inserts load the last two hours (left unmerged)",
    )
    parser.add_argument(
        "--logs",
        action="store_true",
        help="produce the LogRecorded events too (11 events an execution instead of 6)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse (or carry on) the build the state file records; without it, build anew",
    )
    report = asyncio.run(run_until_signalled(parser.parse_args()))
    print(json.dumps(report, indent=2))


async def run_until_signalled(args: argparse.Namespace) -> dict[str, object]:
    """`run`, cancelled on SIGTERM too, so a metrics service it started is stopped (a later
    run carries on from the stage the state file records)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run(args)
    except asyncio.CancelledError:
        sys.exit("[bench] interrupted")


if __name__ == "__main__":
    main()
