"""``validate_workflow``: every problem of a definition at once, each with its location."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .errors import Problem, WorkflowInvalid
from .models import END, PARAMS_MODELS, STEP_TYPES, WorkflowDefinition
from .paths import format_path, join_path
from .steps import url_problem
from .templates import check_expression, locate_problems

TEMPLATED_PARAMS: dict[str, tuple[str, ...]] = {
    "transform": ("output",),
    "http": ("url", "headers", "body"),
    "log": ("message", "data"),
    "fail": ("message",),
    "condition": (),  # "if" is an expression, checked on its own
    "delay": (),
}
"""The params of each step type that may hold templates."""

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")


def validate_workflow(raw: object) -> WorkflowDefinition:
    """Parse and check a workflow definition (decoded JSON).

    Raises WorkflowInvalid listing every problem found: schema errors, duplicate step ids,
    unknown step types, invalid params for a step's type, template syntax errors and unknown
    names, and condition ``else`` targets that are not ``"end"`` or a later step.
    """
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(by_alias=True)
    if not isinstance(raw, Mapping):
        raise WorkflowInvalid([Problem("", "a workflow definition must be a JSON object")])
    problems: list[Problem] = []
    definition: WorkflowDefinition | None = None
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc.errors(), ()))
    steps = raw.get("steps")
    if isinstance(steps, list):
        problems.extend(_step_problems(steps))
    if "output" in raw:
        problems.extend(_template_problems(raw["output"], "output"))
    if problems or definition is None:
        raise WorkflowInvalid(_ordered(problems))
    return definition


def _step_problems(steps: Sequence[Any]) -> list[Problem]:
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for index, step in enumerate(steps):
        step_id = step.get("id") if isinstance(step, Mapping) else None
        if not isinstance(step_id, str):
            continue
        if step_id in first_index:
            first = first_index[step_id]
            message = f"duplicate step id {step_id!r} (already used by steps[{first}])"
            problems.append(Problem(f"steps[{index}].id", message))
        else:
            first_index[step_id] = index
    for index, step in enumerate(steps):
        if isinstance(step, Mapping):
            problems.extend(_params_problems(index, step, first_index))
    return problems


def _params_problems(index: int, step: Mapping[str, Any], ids: Mapping[str, int]) -> list[Problem]:
    step_type = step.get("type")
    params = step.get("params", {})
    if step_type not in STEP_TYPES or not isinstance(params, Mapping):
        return []  # reported by the schema check
    path = f"steps[{index}].params"
    problems: list[Problem] = []
    try:
        PARAMS_MODELS[step_type].model_validate(params)
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc.errors(), ("steps", index, "params")))
    for name in TEMPLATED_PARAMS[step_type]:
        if name in params:
            problems.extend(_template_problems(params[name], join_path(path, name)))
    if step_type == "condition":
        problems.extend(_condition_problems(index, params, ids, path))
    elif step_type == "http":
        problems.extend(_http_problems(params, path))
    return problems


def _condition_problems(
    index: int, params: Mapping[str, Any], ids: Mapping[str, int], path: str
) -> list[Problem]:
    problems: list[Problem] = []
    expression = params.get("if")
    if isinstance(expression, str) and expression:
        problems.extend(Problem(f"{path}.if", message) for message in check_expression(expression))
    target = params.get("else", END)
    if not isinstance(target, str) or target == END:
        return problems
    field = f"{path}.else"
    target_index = ids.get(target)
    if target_index is None:
        message = f'refers to step {target!r}, which does not exist (use "end" to finish)'
    elif target_index == index:
        message = f"cannot jump to the condition step itself ({target!r})"
    elif target_index < index:
        message = (
            f"must jump forward, but step {target!r} is steps[{target_index}], "
            f"before this step (steps[{index}])"
        )
    else:
        return problems
    problems.append(Problem(field, message))
    return problems


def _http_problems(params: Mapping[str, Any], path: str) -> list[Problem]:
    problems: list[Problem] = []
    url = params.get("url")
    if isinstance(url, str) and url and "{{" not in url:
        problem = url_problem(url)
        if problem:
            problems.append(Problem(f"{path}.url", problem))
    headers = params.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            field = join_path(f"{path}.headers", name)
            if isinstance(name, str) and not _HEADER_NAME.fullmatch(name):
                problems.append(Problem(field, f"{name!r} is not a valid HTTP header name"))
            if isinstance(value, str) and _BAD_HEADER_CHARS.search(value):
                problems.append(Problem(field, "header values cannot contain line breaks or NUL"))
    return problems


def _template_problems(template: Any, path: str) -> list[Problem]:
    return [Problem(where, message) for where, message in locate_problems(template, path)]


def _from_pydantic(errors: Iterable[ErrorDetails], prefix: tuple[str | int, ...]) -> list[Problem]:
    problems = []
    for error in errors:
        loc = prefix + tuple(error["loc"])
        problems.append(Problem(format_path(loc), _message(error, loc)))
    return problems


def _message(error: ErrorDetails, loc: tuple[str | int, ...]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "literal_error" and len(loc) == 3 and loc[0] == "steps" and loc[2] == "type":
        return f"unknown step type {error['input']!r}; expected one of: {', '.join(STEP_TYPES)}"
    if kind == "string_pattern_mismatch" and loc[-1] == "id":
        return (
            "must start with a letter or '_' and hold only letters, digits, '_' and '-' "
            "(at most 64 characters)"
        )
    return str(error["msg"])


def _ordered(problems: list[Problem]) -> list[Problem]:
    """Unique problems: document fields first, then steps in order, then the output."""
    unique = list(dict.fromkeys(problems))

    def key(problem: Problem) -> tuple[int, int]:
        match = re.match(r"steps\[(\d+)\]", problem.field)
        if match:
            return (1, int(match.group(1)))
        if problem.field == "output" or problem.field.startswith(("output.", "output[")):
            return (2, 0)
        return (0, 0)

    return sorted(unique, key=key)


__all__ = ["TEMPLATED_PARAMS", "Problem", "WorkflowInvalid", "validate_workflow"]
