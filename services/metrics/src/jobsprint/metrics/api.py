"""The HTTP API the gateway (and operators, and analysts) talk to.

GET  /v1/metrics?workspaceId=…&workflowId=…&fromDate=…&toDate=…&granularity=…
     (also at /v1/executions/metrics, the public path the gateway proxies)
POST /v1/sql        {"sql": "SELECT …"}  read-only analyst SQL; loopback or bearer token
GET  /healthz       the process is alive
GET  /readyz        ClickHouse answers and the Kafka loader runs
GET  /metrics       Prometheus
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobsprint.metrics import telemetry
from jobsprint.metrics.clickhouse import AsyncClickHouse, ClickHouseError
from jobsprint.metrics.queries import InvalidQuery, execution_metrics, parse_metrics_query
from jobsprint.metrics.readonly_sql import NotReadOnly, check_read_only

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[str | None]]  # None when ready, else the reason


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiContext:
    """What the API needs; the service builds it, tests pass their own."""

    metrics: AsyncClickHouse  # answers /v1/metrics
    database: str
    ready: Readiness
    analyst: AsyncClickHouse | None = None  # a readonly session for /v1/sql; None: disabled
    sql_token: str | None = None
    sql_max_rows: int = 10_000
    now: Callable[[], datetime] = field(default=_utcnow)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, default=str), status_code=status, media_type="application/json"
    )


def error_response(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    error["details"] = details or []
    return json_response({"success": False, "error": error}, status)


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Jobsprint metrics",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "validation_error", "invalid request", [])

    async def metrics(request: Request) -> Response:
        params = request.query_params
        try:
            query = parse_metrics_query(
                workspace_id=params.get("workspaceId"),
                workflow_id=params.get("workflowId"),
                from_date=params.get("fromDate"),
                to_date=params.get("toDate"),
                granularity=params.get("granularity"),
                now=context.now(),
            )
        except InvalidQuery as exc:
            return error_response(
                400,
                "validation_error",
                str(exc),
                [{"field": name, "message": message} for name, message in exc.details],
            )
        started = time.perf_counter()
        try:
            data = await execution_metrics(context.metrics, context.database, query)
        except ClickHouseError as exc:
            log.error("metrics query failed: %s", exc)
            return error_response(503, "unavailable", "metrics are unavailable right now")
        telemetry.QUERY_SECONDS.labels(query.granularity).observe(time.perf_counter() - started)
        return json_response({"success": True, "data": data})

    app.add_api_route("/v1/metrics", metrics, methods=["GET"])
    app.add_api_route("/v1/executions/metrics", metrics, methods=["GET"])

    @app.post("/v1/sql")
    async def sql(request: Request) -> Response:
        if context.analyst is None:
            return error_response(404, "not_found", "analyst SQL is not enabled")
        if not _may_use_sql(request, context.sql_token):
            return error_response(
                403,
                "forbidden",
                "POST /v1/sql answers loopback callers, or callers with the bearer token "
                "set in JOBSPRINT_METRICS_SQL_TOKEN",
            )
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        text = body.get("sql") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return error_response(
                400,
                "validation_error",
                'the body must be {"sql": "SELECT …"}',
                [{"field": "sql", "message": "is required"}],
            )
        try:
            statement = check_read_only(text)
        except NotReadOnly as exc:
            return error_response(
                400, "validation_error", str(exc), [{"field": "sql", "message": str(exc)}]
            )
        try:
            table = await context.analyst.query_table(statement)
        except ClickHouseError as exc:
            return error_response(400, "query_failed", str(exc))
        rows = table.rows[: context.sql_max_rows]
        return json_response(
            {
                "success": True,
                "data": {
                    "columns": table.columns,
                    "rows": rows,
                    "truncated": len(table.rows) > len(rows),
                },
            }
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        reason = await context.ready()
        if reason is None:
            return json_response({"status": "ready"})
        return json_response({"status": "unready", "reason": reason}, 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(telemetry.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _may_use_sql(request: Request, token: str | None) -> bool:
    header = request.headers.get("authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:], token):
        return True
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
