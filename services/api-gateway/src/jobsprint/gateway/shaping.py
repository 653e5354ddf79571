"""Response shaping (pure logic): read-model and gateway rows -> the JSON the spec shows.

Every timestamp is UTC ISO 8601 with milliseconds (`2025-01-06T12:30:00.123Z`), the
precision every stored time has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from jobsprint.events.envelope import time_json

Row = Mapping[str, Any]


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return time_json(value.astimezone(UTC))  # the events' own format


def error_info(value: Any) -> dict[str, Any] | None:
    """`{code, message, stepId}` from a stored error, whatever casing it was stored in."""
    if not isinstance(value, Mapping):
        return None
    return {
        "code": value.get("code"),
        "message": value.get("message"),
        "stepId": value.get("stepId", value.get("step_id")),
    }


def _started(row: Row) -> datetime | None:
    # before an execution runs, "started" is when it was accepted (what execute answered)
    started: datetime | None = row.get("started_at") or row.get("created_at")
    return started


def _finished(row: Row) -> datetime | None:
    finished: datetime | None = row.get("finished_at")
    if finished is None and row.get("status") == "cancelled":
        finished = row.get("cancelled_at")
    return finished


def execution_item(row: Row) -> dict[str, Any]:
    """One item of `GET /v1/executions`."""
    item: dict[str, Any] = {
        "id": row["id"],
        "workflowId": row["workflow_id"],
        "workflowName": row["workflow_name"],
        "workflowVersion": row["workflow_version"],
        "status": row["status"],
        "startedAt": iso(_started(row)),
        "finishedAt": iso(_finished(row)),
        "duration": row.get("duration_ms"),
        "triggeredBy": row["triggered_by"],
        "inputData": row.get("input"),
    }
    if row.get("original_execution_id"):
        item["originalExecutionId"] = row["original_execution_id"]
    return item


def execution_detail(row: Row, steps: Iterable[Row], logs: Iterable[Row]) -> dict[str, Any]:
    """`GET /v1/executions/{id}`: the list fields, the result, steps in run order, logs."""
    detail = execution_item(row)
    detail["originalExecutionId"] = row.get("original_execution_id")
    detail["outputData"] = row.get("output")
    detail["error"] = error_info(row.get("error"))
    detail["executionSteps"] = [step_item(step) for step in steps]
    detail["logs"] = [log_item(entry) for entry in logs]
    return detail


def pending_execution(request: Row) -> dict[str, Any]:
    """An accepted execution the read model has not caught up with yet."""
    return {
        "id": request["id"],
        "workflowId": request["workflow_id"],
        "workflowName": request["workflow_name"],
        "workflowVersion": request["workflow_version"],
        "status": "pending",
        "startedAt": iso(request["requested_at"]),
        "finishedAt": None,
        "duration": None,
        "triggeredBy": request["triggered_by"],
        "inputData": request.get("input"),
        "originalExecutionId": request.get("original_execution_id"),
        "outputData": None,
        "error": None,
        "executionSteps": [],
        "logs": [],
    }


def step_item(row: Row) -> dict[str, Any]:
    return {
        "stepId": row["step_id"],
        "stepName": row["step_name"],
        "stepType": row["step_type"],
        "status": row["status"],
        "startedAt": iso(row.get("started_at")),
        "finishedAt": iso(row.get("finished_at")),
        "duration": row.get("duration_ms"),
        "attempts": row.get("attempts"),
        "input": row.get("input"),
        "output": row.get("output"),
        "error": error_info(row.get("error")),
        "reusedFrom": row.get("reused_from"),
    }


def log_item(row: Row) -> dict[str, Any]:
    item: dict[str, Any] = {
        "level": row["level"],
        "message": row["message"],
        "timestamp": iso(row["time"]),
        "stepId": row.get("step_id"),
    }
    if row.get("data") is not None:
        item["data"] = row["data"]
    return item


def accepted(
    execution_id: str,
    requested_at: datetime,
    public_url: str,
    *,
    original_execution_id: str | None = None,
) -> dict[str, Any]:
    """The 202 answer of execute, webhook and retry."""
    body: dict[str, Any] = {"executionId": execution_id}
    if original_execution_id is not None:
        body["originalExecutionId"] = original_execution_id
    body.update(
        {
            "status": "pending",
            "startedAt": iso(requested_at),
            "url": f"{public_url}/v1/executions/{execution_id}",
        }
    )
    return body


def completed(row: Row) -> dict[str, Any]:
    """The 200 answer of execute with `waitForCompletion` once the execution is terminal."""
    body: dict[str, Any] = {
        "executionId": row["id"],
        "status": row["status"],
        "startedAt": iso(_started(row)),
        "finishedAt": iso(_finished(row)),
        "duration": row.get("duration_ms"),
        "outputData": row.get("output"),
    }
    if row["status"] == "error":
        body["error"] = error_info(row.get("error"))
    return body


_STEP_KEYS = ("id", "name", "type", "params", "retry", "timeout")


def _step_in_order(step: Mapping[str, Any]) -> dict[str, Any]:
    """Step keys in the documented order (jsonb storage does not keep key order)."""
    ordered = {key: step[key] for key in _STEP_KEYS if key in step}
    ordered.update({key: value for key, value in step.items() if key not in ordered})
    return ordered


def workflow_item(row: Row, public_url: str) -> dict[str, Any]:
    """A workflow with its current definition (`row["definition"]` is the stored snapshot)."""
    definition: Mapping[str, Any] = row["definition"]
    item: dict[str, Any] = {
        "id": row["id"],
        "name": definition.get("name", row.get("name")),
        "description": definition.get("description"),
        "version": row["current_version"],
        "trigger": definition.get("trigger", {"type": row.get("trigger_type")}),
        "steps": [_step_in_order(step) for step in definition.get("steps", [])],
        "output": definition.get("output"),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }
    if row.get("trigger_type") == "webhook" and row.get("hook_token"):
        item["hookUrl"] = f"{public_url}/v1/hooks/{row['hook_token']}"
    return item
