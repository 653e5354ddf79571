"""What each step type does, without I/O: the executor calls these and performs the effects.

Template failures raise TemplateError (not retryable) located at the param that failed, e.g.
``headers.Authorization: input.token is undefined ...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeAlias, TypeVar
from urllib.parse import urlsplit

from .errors import StepFailure, TemplateError, WorkflowError
from .models import (
    END,
    ConditionParams,
    FailParams,
    HttpParams,
    LogParams,
    TransformParams,
    WorkflowDefinition,
)
from .paths import join_path
from .templates import evaluate, render, render_text, truthy

LogLevel: TypeAlias = Literal["debug", "info", "warn", "error"]
HttpMethod: TypeAlias = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

_T = TypeVar("_T")
_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")
MAX_URL_CHARS = 8192


def build_context(
    input: Any, step_outputs: Mapping[str, Any], execution: Mapping[str, Any]
) -> dict[str, Any]:
    """The template context: ``{"input", "steps": {id: {"output"}}, "execution"}``.

    ``step_outputs`` holds only the steps that ran; ``execution`` should hold JSON values
    (``id``, ``workflowId``, ``startedAt`` as an ISO-8601 string, ...).
    """
    return {
        "input": input,
        "steps": {step_id: {"output": output} for step_id, output in step_outputs.items()},
        "execution": dict(execution),
    }


def run_transform(params: TransformParams, ctx: Mapping[str, Any]) -> Any:
    return _at("output", render, params.output, ctx)


def run_condition(params: ConditionParams, ctx: Mapping[str, Any]) -> bool:
    return truthy(_at("if", evaluate, params.if_, ctx))


def run_log(params: LogParams, ctx: Mapping[str, Any]) -> tuple[LogLevel, str, Any]:
    message = _at("message", render_text, params.message, ctx)
    data = _at("data", render, params.data, ctx)
    return params.level, message, data


def run_fail(params: FailParams, ctx: Mapping[str, Any]) -> NoReturn:
    raise StepFailure(
        params.code, _at("message", render_text, params.message, ctx), retryable=False
    )


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An http step's params after rendering; the executor checks the host and sends it."""

    method: HttpMethod
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    timeout_seconds: float = 30.0


def render_http(params: HttpParams, ctx: Mapping[str, Any]) -> HttpRequest:
    """Render url, headers and body. Raises StepFailure ``invalid_url`` / ``invalid_header``."""
    url = _at("url", render_text, params.url, ctx)
    problem = url_problem(url)
    if problem:
        raise StepFailure("invalid_url", f"url {url[:200]!r} {problem}")
    headers: dict[str, str] = {}
    for name, template in params.headers.items():
        value = _at(join_path("headers", name), render_text, template, ctx)
        if _BAD_HEADER_CHARS.search(value):
            raise StepFailure("invalid_header", f"header {name!r} contains a line break or NUL")
        headers[name] = value
    body = _at("body", render, params.body, ctx)
    return HttpRequest(params.method, url, headers, body, params.timeoutSeconds)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be requested, or None. Only absolute http(s) URLs are allowed."""
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not host:
        return "has no host"
    if any(char.isspace() for char in url):
        return "contains whitespace"
    return None


def next_step_index(
    definition: WorkflowDefinition, current_index: int, condition_result: bool | None
) -> int | None:
    """Index of the step to run after ``current_index``; None ends the workflow.

    A condition step whose result is False jumps to its ``else`` (None for ``"end"``);
    every other case moves to the next step (None after the last).
    """
    steps = definition.steps
    if not 0 <= current_index < len(steps):
        raise IndexError(f"step index {current_index} is out of range (0..{len(steps) - 1})")
    step = steps[current_index]
    if step.type == "condition" and condition_result is False:
        target = ConditionParams.model_validate(step.params).else_
        if target == END:
            return None
        index = definition.step_index(target)
        if index is None or index <= current_index:
            raise WorkflowError(f"step {step.id!r} jumps to {target!r}, which is not a later step")
        return index
    following = current_index + 1
    return following if following < len(steps) else None


def final_output(definition: WorkflowDefinition, ctx: Mapping[str, Any], last_output: Any) -> Any:
    """The workflow's result: its rendered ``output`` template, else the last step's output."""
    if definition.output is None:
        return last_output
    return _at("output", render, definition.output, ctx)


def _at(location: str, func: Callable[[Any, Mapping[str, Any]], _T], value: Any, ctx: Any) -> _T:
    try:
        return func(value, ctx)
    except TemplateError as exc:
        raise exc.at(location) from None


__all__ = [
    "HttpRequest",
    "LogLevel",
    "StepFailure",
    "build_context",
    "final_output",
    "next_step_index",
    "render_http",
    "run_condition",
    "run_fail",
    "run_log",
    "run_transform",
    "url_problem",
]
