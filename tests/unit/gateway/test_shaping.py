"""Response shaping and filter parsing: rows in, the spec's JSON out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobsprint.events.ids import id_time
from jobsprint.gateway.errors import InvalidRequest, validation_error
from jobsprint.gateway.filters import ExecutionFilters, parse_instant
from jobsprint.gateway.shaping import (
    accepted,
    completed,
    execution_detail,
    execution_item,
    iso,
    log_item,
    pending_execution,
    workflow_item,
)

pytestmark = pytest.mark.unit

AT = datetime(2025, 1, 6, 12, 30, 0, 123000, tzinfo=UTC)
ROW = {
    "id": "exec_1",
    "workflow_id": "wf_1",
    "workflow_name": "Email Auto-Responder",
    "workflow_version": 2,
    "status": "error",
    "triggered_by": "webhook",
    "input": {"a": 1},
    "output": None,
    "error": {"code": "timeout", "message": "too slow", "step_id": "node_2"},
    "original_execution_id": None,
    "created_at": AT,
    "started_at": AT + timedelta(milliseconds=7),
    "finished_at": AT + timedelta(seconds=5),
    "cancelled_at": None,
    "duration_ms": 4993,
}


def test_times_are_utc_with_milliseconds() -> None:
    assert iso(AT) == "2025-01-06T12:30:00.123Z"
    assert iso(datetime(2025, 1, 6, 13, 30, tzinfo=timezone(timedelta(hours=1)))) == (
        "2025-01-06T12:30:00.000Z"
    )
    assert iso(None) is None


def test_list_item_has_the_spec_fields() -> None:
    item = execution_item(ROW)
    assert item == {
        "id": "exec_1",
        "workflowId": "wf_1",
        "workflowName": "Email Auto-Responder",
        "workflowVersion": 2,
        "status": "error",
        "startedAt": "2025-01-06T12:30:00.130Z",
        "finishedAt": "2025-01-06T12:30:05.123Z",
        "duration": 4993,
        "triggeredBy": "webhook",
        "inputData": {"a": 1},
    }
    retried = execution_item({**ROW, "original_execution_id": "exec_0"})
    assert retried["originalExecutionId"] == "exec_0"


def test_a_pending_execution_started_when_it_was_accepted() -> None:
    item = execution_item(
        {**ROW, "status": "pending", "started_at": None, "finished_at": None, "duration_ms": None}
    )
    assert item["startedAt"] == "2025-01-06T12:30:00.123Z"
    assert item["finishedAt"] is None and item["duration"] is None


def test_detail_normalises_errors_and_orders_nothing_itself() -> None:
    step = {
        "step_id": "node_2",
        "step_name": "Call",
        "step_type": "http",
        "status": "error",
        "started_at": AT,
        "finished_at": None,
        "duration_ms": None,
        "attempts": 3,
        "input": {"url": "u"},
        "output": None,
        "error": {"code": "http_500", "message": "bad", "stepId": "node_2"},
        "reused_from": None,
    }
    log = {"level": "error", "message": "failed", "time": AT, "step_id": "node_2", "data": None}
    detail = execution_detail(ROW, [step], [log])
    assert detail["error"] == {"code": "timeout", "message": "too slow", "stepId": "node_2"}
    assert detail["outputData"] is None and detail["originalExecutionId"] is None
    assert detail["executionSteps"][0]["error"]["stepId"] == "node_2"
    assert detail["executionSteps"][0]["attempts"] == 3
    assert detail["logs"] == [
        {
            "level": "error",
            "message": "failed",
            "timestamp": "2025-01-06T12:30:00.123Z",
            "stepId": "node_2",
        }
    ]
    assert log_item({**log, "data": {"x": 1}})["data"] == {"x": 1}


def test_accepted_completed_and_pending_answers() -> None:
    assert accepted("exec_9", AT, "https://api.example") == {
        "executionId": "exec_9",
        "status": "pending",
        "startedAt": "2025-01-06T12:30:00.123Z",
        "url": "https://api.example/v1/executions/exec_9",
    }
    assert list(accepted("exec_9", AT, "u", original_execution_id="exec_1")) == [
        "executionId",
        "originalExecutionId",
        "status",
        "startedAt",
        "url",
    ]
    done = completed(ROW)
    assert done["error"] == {"code": "timeout", "message": "too slow", "stepId": "node_2"}
    assert "error" not in completed({**ROW, "status": "success", "output": {"ok": 1}})
    request = {
        "id": "exec_2",
        "workflow_id": "wf_1",
        "workflow_name": "n",
        "workflow_version": 1,
        "triggered_by": "api",
        "input": {},
        "original_execution_id": None,
        "requested_at": AT,
    }
    pending = pending_execution(request)
    assert pending["status"] == "pending" and pending["executionSteps"] == []
    assert pending["startedAt"] == "2025-01-06T12:30:00.123Z"


def test_workflow_item_adds_hook_url_for_webhooks_only() -> None:
    definition = {
        "name": "n",
        "description": None,
        "trigger": {"type": "webhook"},
        "steps": [{"id": "a"}],
        "output": None,
    }
    row = {
        "id": "wf_1",
        "current_version": 3,
        "trigger_type": "webhook",
        "hook_token": "tok",
        "created_at": AT,
        "updated_at": AT,
        "definition": definition,
    }
    item = workflow_item(row, "https://api.example")
    assert item["hookUrl"] == "https://api.example/v1/hooks/tok"
    assert item["version"] == 3 and item["steps"] == [{"id": "a"}]
    manual = workflow_item(
        {
            **row,
            "trigger_type": "manual",
            "hook_token": None,
            "definition": {**definition, "trigger": {"type": "manual"}},
        },
        "u",
    )
    assert "hookUrl" not in manual


def test_instants_accept_dates_and_offsets() -> None:
    assert parse_instant("2025-01-06", "f") == datetime(2025, 1, 6, tzinfo=UTC)
    assert parse_instant("2025-01-06T12:30:00Z", "f") == datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
    assert parse_instant("2025-01-06T13:30:00+01:00", "f") == datetime(
        2025, 1, 6, 12, 30, tzinfo=UTC
    )
    assert parse_instant("2025-01-06T12:30:00", "f").tzinfo is UTC
    with pytest.raises(InvalidRequest) as bad:
        parse_instant("06/01/2025", "fromDate")
    assert bad.value.details[0]["field"] == "fromDate"


def test_date_filters_become_id_bounds() -> None:
    filters = ExecutionFilters.parse(
        workflow_id=None,
        status="success",
        from_date="2025-01-06",
        to_date="2025-01-06T12:00:00Z",
    )
    assert filters.id_min is not None and filters.id_below is not None
    assert id_time(filters.id_min) == datetime(2025, 1, 6, tzinfo=UTC)
    assert id_time(filters.id_below) == datetime(2025, 1, 6, 12, 0, 0, 1000, tzinfo=UTC)
    with pytest.raises(InvalidRequest):
        ExecutionFilters.parse(workflow_id=None, status="done", from_date=None, to_date=None)
    same = ExecutionFilters.parse(
        workflow_id=None,
        status="success",
        from_date="2025-01-06T00:00:00+00:00",
        to_date="2025-01-06T12:00:00.000Z",
    )
    assert same.fingerprint() == filters.fingerprint()


def test_validation_errors_name_dotted_fields() -> None:
    error = validation_error(
        [
            {"type": "extra_forbidden", "loc": ("body", "options", "retries"), "msg": "x"},
            {"type": "missing", "loc": ("query", "limit"), "msg": "x"},
            {"type": "int_type", "loc": ("steps", 2, "timeout"), "msg": "Input should be an int"},
        ]
    )
    assert error.status == 400 and error.code == "validation_error"
    assert error.details == [
        {"field": "options.retries", "message": "is not a known field"},
        {"field": "limit", "message": "is required"},
        {"field": "steps[2].timeout", "message": "Input should be an int"},
    ]
