"""Prometheus metrics of the gateway and the middleware that times every request."""

from __future__ import annotations

import time
from functools import cache

from prometheus_client import Counter, Histogram

from jobsprint.gateway.limits import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUEST_SECONDS = Histogram(
    "jobsprint_http_request_seconds",
    "Time to answer an HTTP request, by route template and status.",
    ("method", "route", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EXECUTIONS_REQUESTED = Counter(
    "jobsprint_executions_requested_total",
    "Executions accepted (command produced), by trigger.",
    ("trigger",),
)


class RequestMetricsMiddleware:
    """Times each request under its route *template* (`/v1/executions/{execution_id}`),
    never the raw path, so ids do not explode the label set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            _timer(scope.get("method", ""), template, status).observe(time.perf_counter() - started)


@cache
def _timer(method: str, template: str, status: int) -> Histogram:
    """HTTP_REQUEST_SECONDS's child for these labels, remembered (as the executor's series
    are): `labels()` checks and locks on each call, a noticeable part of a cheap request."""
    return HTTP_REQUEST_SECONDS.labels(method, template, str(status))
