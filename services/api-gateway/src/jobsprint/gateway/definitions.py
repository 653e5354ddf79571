"""Workflow definitions as the API accepts them (pure logic), checked by jobsprint.workflows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobsprint.gateway.errors import InvalidRequest
from jobsprint.workflows import Problem, WorkflowDefinition, WorkflowInvalid, validate_workflow


def validated_definition(doc: Any) -> dict[str, Any]:
    """The snapshot stored as a version and sent with every execution of it:
    `{"name", "description", "trigger", "steps", "output"}` as validated (defaults filled).
    InvalidRequest (400) listing every problem otherwise."""
    problems: list[Problem] = []
    if isinstance(doc, Mapping) and "trigger" not in doc:
        # the library defaults a missing trigger to manual; the API asks for it explicitly
        problems.append(Problem("trigger", 'is required ({"type": "manual"} or "webhook")'))
    definition: WorkflowDefinition | None = None
    try:
        definition = validate_workflow(doc)
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
    if problems or definition is None:
        details = [problem.to_dict() for problem in problems]
        count = len(details)
        noun = "problem" if count == 1 else "problems"
        summary = "; ".join(str(p) for p in problems[:3])
        raise InvalidRequest(f"workflow definition is invalid ({count} {noun}): {summary}", details)
    return snapshot(definition)


def snapshot(definition: WorkflowDefinition) -> dict[str, Any]:
    dumped = definition.model_dump(mode="json", by_alias=True)
    return {key: dumped[key] for key in ("name", "description", "trigger", "steps", "output")}


def step_ids(definition: Mapping[str, Any]) -> list[str]:
    """Step ids of a stored snapshot, in definition order."""
    return [str(step["id"]) for step in definition.get("steps", [])]
