"""The OpenAPI document: what `answers` declares, what `finish_document` leaves, and that
the JSON the routes shape is what the document describes (the security suite checks the
same against the running gateway)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Match

from jobsprint.gateway.app import create_app
from jobsprint.gateway.routes import executions
from jobsprint.gateway.routes.openapi import answers, request_body
from jobsprint.gateway.schemas import ErrorResponse, ExecuteRequest, WorkflowResponse
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.shaping import (
    accepted,
    completed,
    execution_detail,
    execution_item,
    pending_execution,
    workflow_item,
)

pytestmark = pytest.mark.unit

AT = datetime(2025, 1, 6, 12, 30, 0, 123000, tzinfo=UTC)
EXECUTION = {
    "id": "exec_1",
    "workflow_id": "wf_1",
    "workflow_name": "Mail",
    "workflow_version": 2,
    "status": "error",
    "triggered_by": "retry",
    "input": {"a": 1},
    "output": None,
    "error": {"code": "boom", "message": "failed", "stepId": "b"},
    "original_execution_id": "exec_0",
    "created_at": AT,
    "started_at": AT,
    "finished_at": AT,
    "cancelled_at": None,
    "duration_ms": 5,
}
STEP = {
    "step_id": "b",
    "step_name": "B",
    "step_type": "fail",
    "status": "error",
    "started_at": AT,
    "finished_at": None,
    "duration_ms": None,
    "attempts": 1,
    "input": None,
    "output": None,
    "error": {"code": "boom", "message": "failed", "step_id": "b"},
    "reused_from": None,
}
LOG = {"level": "info", "message": "m", "time": AT, "step_id": None, "data": {"x": 1}}
DEFINITION = {
    "name": "Hook",
    "description": None,
    "trigger": {"type": "webhook"},
    "steps": [
        {
            "id": "a",
            "name": "A",
            "type": "http",
            "params": {"url": "https://x"},
            "retry": {"maxAttempts": 2, "backoffSeconds": 1.0, "backoffMultiplier": 2.0},
            "timeout": None,
        }
    ],
    "output": None,
}
PAGE = {"nextCursor": None, "prevCursor": "c", "hasMore": False}
WORKFLOW = {
    "id": "wf_1",
    "name": "Hook",
    "current_version": 3,
    "trigger_type": "webhook",
    "hook_token": "t" * 32,
    "definition": DEFINITION,
    "created_at": AT,
    "updated_at": AT,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(GatewaySettings()).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    """Validates against component `name`, with every documented object closed, so a field
    the routes send but the document does not name fails too."""
    components = copy.deepcopy(document["components"])
    for schema in components["schemas"].values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    root = {"$ref": f"#/components/schemas/{name}", "components": components}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_answers_gives_each_error_status_the_error_envelope() -> None:
    documented = answers({201: (WorkflowResponse, "Created")}, errors=(400, 429))
    assert documented[201] == {"model": WorkflowResponse, "description": "Created"}
    assert documented[400]["model"] is ErrorResponse
    assert "Retry-After" in documented[429]["headers"]
    assert answers({200: WorkflowResponse})[200]["description"] == (
        "The workflow with its current version."
    )
    with pytest.raises(ValueError, match="418"):
        answers({200: WorkflowResponse}, errors=(418,))


def test_request_body_documents_a_model_or_a_plain_schema() -> None:
    body = request_body(ExecuteRequest, "d")["requestBody"]
    assert body["required"] is False
    schema = body["content"]["application/json"]["schema"]
    assert schema["properties"]["options"]["anyOf"][0] == {
        "$ref": "#/components/schemas/ExecuteOptions"
    }
    plain = request_body({"type": "object"}, "d", required=True)["requestBody"]
    assert plain["content"]["application/json"]["schema"] == {"type": "object"}


def test_no_operation_documents_the_422_the_gateway_never_sends(
    document: dict[str, Any],
) -> None:
    for label, operation in operations(document):
        assert "422" not in operation["responses"], label
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_error_answer_is_the_envelope_and_every_reference_resolves(
    document: dict[str, Any],
) -> None:
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    for label, operation in operations(document):
        for status, answer in operation["responses"].items():
            schema = answer["content"]["application/json"]["schema"]
            if int(status) >= 400:
                assert schema == envelope, (label, status)
            else:
                assert schema != {}, (label, status)  # every success body is described
        if label.startswith(("GET /v1", "POST /v1", "PUT /v1", "DELETE /v1")):
            assert "400" in operation["responses"] and "503" in operation["responses"], label
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    known = {f"#/components/schemas/{name}" for name in document["components"]["schemas"]}
    assert set(refs) <= known
    assert "$defs" not in str(document)


def test_the_execute_operation_documents_what_its_route_serves(
    document: dict[str, Any],
) -> None:
    # execute is served by a plain route and documented from a declaration beside it
    # (routes/plain.py): what clients generate their calls from must not move
    path = document["paths"]["/v1/workflows/{workflow_id}/execute"]
    assert list(path) == ["post"]
    operation = path["post"]
    assert operation["operationId"] == "execute_workflow_v1_workflows__workflow_id__execute_post"
    assert operation["tags"] == ["workflows"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"

    parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert set(parameters) == {("path", "workflow_id"), ("header", "Idempotency-Key")}
    workflow_id = parameters["path", "workflow_id"]
    assert workflow_id["required"] is True and workflow_id["schema"]["type"] == "string"
    key = parameters["header", "Idempotency-Key"]
    assert key["required"] is False
    assert key["schema"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert key["description"].startswith("1 to 200 characters")

    body = operation["requestBody"]
    assert body["required"] is False
    schema = body["content"]["application/json"]["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"inputData", "options"}
    assert {"type": "object", "additionalProperties": True} in (
        schema["properties"]["inputData"]["anyOf"]
    )
    assert schema["properties"]["options"]["anyOf"][0] == {
        "$ref": "#/components/schemas/ExecuteOptions"
    }
    options = document["components"]["schemas"]["ExecuteOptions"]
    assert options["additionalProperties"] is False
    assert options["properties"]["waitForCompletion"] == {
        "default": False,
        "title": "Waitforcompletion",
        "type": "boolean",
    }
    timeout = options["properties"]["timeout"]
    assert (timeout["type"], timeout["minimum"], timeout["maximum"]) == ("integer", 1, 86400)
    assert timeout["default"] == 300

    responses = operation["responses"]
    errors = {"400", "401", "403", "404", "409", "413", "429", "503"}
    assert set(responses) == {"200", "202"} | errors

    def body_of(status: str) -> Any:
        return responses[status]["content"]["application/json"]["schema"]

    assert body_of("200") == {"$ref": "#/components/schemas/ExecutionCompletedResponse"}
    assert body_of("202") == {"$ref": "#/components/schemas/ExecutionAcceptedResponse"}
    for status in errors:
        assert body_of(status) == {"$ref": "#/components/schemas/ErrorResponse"}, status
    assert set(responses["401"]["headers"]) == {"WWW-Authenticate"}
    assert set(responses["429"]["headers"]) == {"Retry-After"}
    assert set(responses["503"]["headers"]) == {"Retry-After"}


def test_the_get_execution_operation_documents_what_its_route_serves(
    document: dict[str, Any],
) -> None:
    # GET /v1/executions/{execution_id} is a plain route too (polling clients call it)
    operation = document["paths"]["/v1/executions/{execution_id}"]["get"]
    assert operation["operationId"] == "get_execution_v1_executions__execution_id__get"
    assert operation["summary"] == "An execution with its steps and logs"
    assert "description" not in operation
    assert operation["security"] == [{"HTTPBearer": []}]
    assert [(p["in"], p["name"], p["required"]) for p in operation["parameters"]] == [
        ("path", "execution_id", True)
    ]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "429", "503"}
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ExecutionResponse"}


def test_the_plain_get_route_leaves_fixed_paths_to_their_routes() -> None:
    # `/v1/executions/metrics` must reach the metrics route, not be read as an execution id
    [get] = executions.plain_routes()

    def match(path: str) -> Match:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
        return get.matches(scope)[0]

    assert match("/v1/executions/exec_01jgz0000000000000000000") is Match.FULL
    assert match("/v1/executions/metrics") is Match.NONE
    assert match("/v1/executions/metricsx") is Match.FULL
    assert match("/v1/executions/exec_1/logs") is Match.NONE


def test_the_shaped_answers_are_what_the_document_describes(document: dict[str, Any]) -> None:
    base = "https://api.example"
    pending = {**EXECUTION, "requested_at": AT, "original_execution_id": None}
    items = [execution_item(EXECUTION), execution_item({**EXECUTION, "input": None})]
    shaped = [
        ("ExecutionListResponse", {"success": True, "data": items, "pagination": PAGE}),
        (
            "ExecutionResponse",
            ok(execution_detail(EXECUTION, [STEP], [LOG, {**LOG, "data": None}])),
        ),
        ("ExecutionResponse", ok(pending_execution(pending))),
        ("ExecutionAcceptedResponse", ok(accepted("exec_2", AT, base, original_execution_id="e"))),
        ("ExecutionAcceptedResponse", ok(accepted("exec_2", AT, base))),
        ("ExecutionCompletedResponse", ok(completed(EXECUTION))),
        ("ExecutionCompletedResponse", ok(completed({**EXECUTION, "status": "success"}))),
        ("WorkflowResponse", ok(workflow_item(WORKFLOW, base))),
        (
            "ErrorResponse",
            {"success": False, "error": {"code": "c", "message": "m", "details": None}},
        ),
    ]
    for name, body in shaped:
        errors = [error.message for error in validator(document, name).iter_errors(body)]
        assert not errors, (name, errors)


def test_the_document_refuses_what_contradicts_it(document: dict[str, Any]) -> None:
    # so the test above can fail: a null where a value is promised, an unnamed field, a null
    # for a field that is left out instead
    item = execution_item(EXECUTION)
    listing = validator(document, "ExecutionListResponse")
    assert listing.is_valid({"success": True, "data": [item], "pagination": PAGE})
    assert not listing.is_valid({"success": True, "data": [item], "pagination": None})
    null_original = {**item, "originalExecutionId": None}
    assert not listing.is_valid({"success": True, "data": [null_original], "pagination": PAGE})
    unnamed = {**workflow_item(WORKFLOW, "u"), "secret": 1}
    assert not validator(document, "WorkflowResponse").is_valid(ok(unnamed))


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}
