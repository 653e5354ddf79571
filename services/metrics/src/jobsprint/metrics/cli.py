"""`jobsprint-metrics`: run the service, or ask ClickHouse a read-only question.

    jobsprint-metrics                       loader + HTTP API (same as `serve`)
    jobsprint-metrics sql "SELECT …" [--format tsv|json]

`sql` opens the chDB folder read-only (or the ClickHouse server). While the service runs, it
owns the chDB folder; then `sql` sends the statement to the service's `POST /v1/sql` on
loopback instead, and says so on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from jobsprint.metrics.clickhouse import ClickHouseError, EngineLocked, Table
from jobsprint.metrics.readonly_sql import NotReadOnly, check_read_only
from jobsprint.metrics.settings import MetricsSettings
from jobsprint.runtime.logs import setup_logging
from jobsprint.runtime.settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobsprint-metrics",
        description="Jobsprint metrics: events into ClickHouse, execution metrics over HTTP.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the loader and the HTTP API (the default)")
    sql = commands.add_parser(
        "sql",
        help="run one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS)",
    )
    sql.add_argument("statement", help='e.g. "SELECT count() FROM jobsprint.executions FINAL"')
    sql.add_argument(
        "--format",
        choices=("tsv", "json"),
        default="tsv",
        help="tsv: a header line then rows; json: one object per row",
    )
    args = parser.parse_args(argv)
    settings = load_settings(MetricsSettings)
    if args.command == "sql":
        return run_sql(settings, args.statement, args.format, sys.stdout, sys.stderr)
    return run_service(settings)


def run_service(settings: MetricsSettings) -> int:
    from jobsprint.metrics.service import serve

    setup_logging("metrics", settings.log_level)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(settings))


def run_sql(settings: MetricsSettings, statement: str, fmt: str, out: TextIO, err: TextIO) -> int:
    try:
        statement = check_read_only(statement)
    except NotReadOnly as exc:
        err.write(f"refused: {exc}\n")
        return 2
    try:
        table = query_engine(settings, statement)
    except EngineLocked:
        url = service_sql_url(settings)
        err.write(
            f"the metrics service is running and owns the chDB folder {settings.chdb_path}; "
            f"asking it instead (POST {url})\n"
        )
        try:
            table = query_service(url, statement, settings.metrics_sql_token)
        except ServiceRefused as exc:
            err.write(f"error: {exc}\n")
            return 1
        except OSError as exc:
            err.write(
                f"error: cannot reach the running service at {url} ({exc}). Send the query to "
                f"its POST /v1/sql yourself, e.g.\n  curl -s {url} -d "
                '\'{"sql": "SELECT 1"}\'\n'
            )
            return 1
    except ClickHouseError as exc:
        err.write(f"error: {exc}\n")
        return 1
    write_table(table, fmt, out)
    return 0


def query_engine(settings: MetricsSettings, statement: str) -> Table:
    """Run the statement on a readonly session of the configured engine."""
    from jobsprint.metrics.service import analyst_settings, open_engine

    if not settings.clickhouse_url and not (settings.chdb_path / "metadata").exists():
        raise ClickHouseError(
            f"no chDB data at {settings.chdb_path.resolve()} "
            "(set JOBSPRINT_CHDB_PATH to the service's folder)"
        )
    engine = open_engine(settings, analyst_settings(settings))
    try:
        table = engine.query_table(statement)
    finally:
        engine.close()
    rows = table.rows[: settings.metrics_sql_max_rows]
    return Table(table.columns, rows)


class ServiceRefused(Exception):
    """The running service answered with an error."""


def service_sql_url(settings: MetricsSettings) -> str:
    host = settings.metrics_http_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.metrics_http_port}/v1/sql"


def query_service(url: str, statement: str, token: str | None) -> Table:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=orjson.dumps({"sql": statement}), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except Exception:
            message = f"HTTP {exc.code}"
        raise ServiceRefused(message) from None
    data = body["data"]
    return Table(list(data["columns"]), [tuple(row) for row in data["rows"]])


def write_table(table: Table, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        for row in table.rows:
            line = orjson.dumps(dict(zip(table.columns, row, strict=True)), default=str)
            out.write(line.decode() + "\n")
        return
    out.write("\t".join(_tsv(c) for c in table.columns) + "\n")
    for row in table.rows:
        out.write("\t".join(_tsv(v) for v in row) + "\n")


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    nested = isinstance(value, list | tuple | dict)
    text = json.dumps(value, default=str) if nested else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
