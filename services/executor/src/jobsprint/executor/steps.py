"""Running one step. Pure step types come from jobsprint.workflows; the ones that wait or
reach the network (`delay`, `http`) live here."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from jobsprint.events import utcnow
from jobsprint.workflows import (
    ConditionParams,
    DelayParams,
    FailParams,
    HttpParams,
    LogParams,
    StepDefinition,
    StepFailure,
    TemplateError,
    TransformParams,
    check_address,
    parse_params,
    render_http,
    run_condition,
    run_fail,
    run_log,
    run_transform,
)

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class StepResult:
    output: Any
    condition: bool | None = None  # the result of a `condition` step
    log: tuple[str, str, Any] | None = None  # (level, message, data) of a `log` step


@dataclass
class StepEnvironment:
    http: httpx.AsyncClient
    allow_list: Sequence[str]
    max_response_bytes: int


async def run_step(
    step: StepDefinition,
    context: Mapping[str, Any],
    env: StepEnvironment,
    started_at: datetime,
) -> StepResult:
    """Run `step` once; StepFailure when it fails. `started_at` lets a resumed delay wait only
    for what is left of it."""
    try:
        params = parse_params(step)
        if isinstance(params, TransformParams):
            return StepResult(run_transform(params, context))
        if isinstance(params, ConditionParams):
            result = run_condition(params, context)
            return StepResult({"result": result}, condition=result)
        if isinstance(params, LogParams):
            level, message, data = run_log(params, context)
            return StepResult({"level": level, "message": message}, log=(level, message, data))
        if isinstance(params, FailParams):
            run_fail(params, context)
            raise StepFailure("failed", "fail step did not fail")  # run_fail always raises
        if isinstance(params, DelayParams):
            return await _delay(params, started_at)
        if isinstance(params, HttpParams):
            return await _http(params, context, env)
    except TemplateError as exc:
        raise StepFailure("template_error", str(exc), retryable=False) from None
    raise StepFailure("unknown_step_type", f"step type {step.type!r} cannot run")


async def _delay(params: DelayParams, started_at: datetime) -> StepResult:
    waited = (utcnow() - started_at).total_seconds()
    await asyncio.sleep(max(0.0, params.seconds - waited))
    return StepResult({"delayedSeconds": params.seconds})


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StepFailure("http_dns", f"cannot resolve {host}: {exc}", retryable=True) from None
    return sorted({str(info[4][0]) for info in infos})


async def _guard(url: str, env: StepEnvironment) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StepFailure("http_bad_url", f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await _resolve(parts.hostname, port)
    refusal = check_address(parts.hostname, addresses, env.allow_list)
    if refusal:
        raise StepFailure("http_forbidden_address", refusal)


async def _http(params: HttpParams, context: Mapping[str, Any], env: StepEnvironment) -> StepResult:
    request = render_http(params, context)
    url, headers, body, method = request.url, dict(request.headers), request.body, request.method
    content: bytes | None = None
    if body is not None and method not in ("GET", "HEAD"):
        if isinstance(body, str):
            content = body.encode()
        else:
            content = orjson.dumps(body)
            headers.setdefault("content-type", "application/json")
    for _ in range(MAX_REDIRECTS + 1):
        # Checked on every hop: a redirect to a private address is refused like a direct call.
        await _guard(url, env)
        try:
            response = await env.http.request(
                method, url, headers=headers, content=content, timeout=request.timeout_seconds
            )
        except httpx.TimeoutException:
            raise StepFailure("http_timeout", f"{method} {url} timed out", retryable=True) from None
        except httpx.HTTPError as exc:
            raise StepFailure("http_error", f"{method} {url}: {exc}", retryable=True) from None
        if response.is_redirect and "location" in response.headers:
            url = urljoin(url, response.headers["location"])
            if response.status_code in (301, 302, 303):
                method, content = "GET", None
            continue
        return StepResult(_http_output(response, env.max_response_bytes))
    raise StepFailure("http_redirects", f"more than {MAX_REDIRECTS} redirects")


def _http_output(response: httpx.Response, limit: int) -> dict[str, Any]:
    raw = response.content
    truncated = len(raw) > limit
    body: Any
    if not truncated and "json" in response.headers.get("content-type", ""):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
    else:
        body = raw[:limit].decode("utf-8", "replace")
    output: dict[str, Any] = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": body,
    }
    if truncated:
        output["truncated"] = True
    if response.status_code >= 400:
        retryable = response.status_code >= 500 or response.status_code == 429
        raise StepFailure(
            "http_status",
            f"HTTP {response.status_code} from {response.request.url.host}",
            retryable=retryable,
        )
    return output
