"""Workflows: CRUD (every PUT stores a new version) and `execute`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from jobsprint.events import ExecuteWorkflow, utcnow
from jobsprint.events.ids import new_execution_id, new_workflow_id
from jobsprint.gateway.auth import require
from jobsprint.gateway.definitions import validated_definition
from jobsprint.gateway.errors import NotFound
from jobsprint.gateway.filters import WORKFLOWS_FINGERPRINT
from jobsprint.gateway.intake import submit, submit_and_wait
from jobsprint.gateway.pagination import make_page, page_request
from jobsprint.gateway.repository import ExecutionRequest
from jobsprint.gateway.routes.common import (
    IDEMPOTENCY_KEY_HEADER,
    IdempotencyKey,
    gateway,
    idempotency_key,
    json_body,
    model_body,
    ok,
)
from jobsprint.gateway.routes.openapi import answers, request_body
from jobsprint.gateway.routes.plain import DocumentedRoute, PlainRoute
from jobsprint.gateway.schemas import (
    DeletedResponse,
    ExecuteRequest,
    ExecutionAcceptedResponse,
    ExecutionCompletedResponse,
    WorkflowListResponse,
    WorkflowRequest,
    WorkflowResponse,
)
from jobsprint.gateway.shaping import accepted, completed, workflow_item
from jobsprint.gateway.tokens import READ, WORKFLOWS, WRITE, Principal, new_hook_token

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

WorkflowReader = Annotated[Principal, Depends(require(READ, WORKFLOWS))]
WorkflowWriter = Annotated[Principal, Depends(require(WORKFLOWS))]


DEFINITION = request_body(WorkflowRequest, "The workflow definition", required=True)


def _not_found(workflow_id: str) -> NotFound:
    return NotFound(f"workflow {workflow_id} not found")


@router.post(
    "",
    status_code=201,
    summary="Create a workflow (version 1)",
    responses=answers(
        {201: (WorkflowResponse, "Created: the workflow")},
        errors=(400, 401, 403, 413, 429, 503),
    ),
    openapi_extra=DEFINITION,
)
async def create_workflow(request: Request, principal: WorkflowWriter) -> Response:
    state = gateway(request)
    definition = validated_definition(await json_body(request))
    is_hook = definition["trigger"]["type"] == "webhook"
    row = await state.adapters.repository.create_workflow(
        workflow_id=new_workflow_id(),
        workspace_id=principal.workspace_id,
        definition=definition,
        hook_token=new_hook_token() if is_hook else None,
        now=utcnow(),
    )
    return ok(
        workflow_item(row, state.settings.public_base),
        status=201,
        headers={"Location": f"{state.settings.public_base}/v1/workflows/{row['id']}"},
    )


@router.get(
    "",
    summary="List workflows, newest first",
    responses=answers({200: WorkflowListResponse}, errors=(400, 401, 403, 429, 503)),
)
async def list_workflows(
    request: Request,
    principal: WorkflowReader,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    before: str | None = None,
) -> Response:
    state = gateway(request)
    page = page_request(
        limit=limit,
        after=after,
        before=before,
        fingerprint=WORKFLOWS_FINGERPRINT,
        id_prefix="wf",
    )
    rows = await state.adapters.repository.list_workflows(principal.workspace_id, page)
    result = make_page(rows, page, lambda row: str(row["id"]))
    public = state.settings.public_base
    return ok([workflow_item(row, public) for row in result.items], pagination=result.pagination())


@router.get(
    "/{workflow_id}",
    summary="A workflow with its current version",
    responses=answers({200: WorkflowResponse}, errors=(400, 401, 403, 404, 429, 503)),
)
async def get_workflow(request: Request, workflow_id: str, principal: WorkflowReader) -> Response:
    state = gateway(request)
    row = await state.adapters.repository.workflow(principal.workspace_id, workflow_id)
    if row is None:
        raise _not_found(workflow_id)
    return ok(workflow_item(row, state.settings.public_base))


@router.put(
    "/{workflow_id}",
    summary="Replace the definition (stored as a new version)",
    responses=answers({200: WorkflowResponse}, errors=(400, 401, 403, 404, 413, 429, 503)),
    openapi_extra=DEFINITION,
)
async def update_workflow(
    request: Request, workflow_id: str, principal: WorkflowWriter
) -> Response:
    state = gateway(request)
    definition = validated_definition(await json_body(request))
    row = await state.adapters.repository.update_workflow(
        workspace_id=principal.workspace_id,
        workflow_id=workflow_id,
        definition=definition,
        new_hook_token=new_hook_token(),
        now=utcnow(),
    )
    state.adapters.workflows.changed(principal.workspace_id, workflow_id)
    if row is None:
        raise _not_found(workflow_id)
    return ok(workflow_item(row, state.settings.public_base))


@router.delete(
    "/{workflow_id}",
    summary="Delete a workflow (its executions stay)",
    responses=answers({200: DeletedResponse}, errors=(400, 401, 403, 404, 429, 503)),
)
async def delete_workflow(
    request: Request, workflow_id: str, principal: WorkflowWriter
) -> Response:
    state = gateway(request)
    deleted = await state.adapters.repository.delete_workflow(
        principal.workspace_id, workflow_id, utcnow()
    )
    state.adapters.workflows.changed(principal.workspace_id, workflow_id)
    if not deleted:
        raise _not_found(workflow_id)
    return ok({"id": workflow_id, "deleted": True})


# --- execute: the hot path, served by a PlainRoute (see plain.py) ----------------------------

EXECUTE_PATH = "/{workflow_id}/execute"
EXECUTE_SCOPES = (WRITE,)


async def execute_workflow(request: Request) -> Response:
    """`POST /v1/workflows/{workflow_id}/execute`. Checks, in the order clients have always
    seen: the token (EXECUTE_SCOPES, rate limit), the body, the Idempotency-Key header, the
    workflow."""
    state = gateway(request)
    principal = await state.auth.authenticate(request, EXECUTE_SCOPES)
    workflow_id: str = request.path_params["workflow_id"]
    adapters = state.adapters
    body = await model_body(request, ExecuteRequest)
    options = body.effective_options
    key = idempotency_key(request.headers.get(IDEMPOTENCY_KEY_HEADER))
    workflow = await adapters.current_workflow(principal.workspace_id, workflow_id)
    if workflow is None:
        raise _not_found(workflow_id)
    requested_at = utcnow()
    input_data = body.inputData if body.inputData is not None else {}
    execution = ExecutionRequest(
        id=new_execution_id(),
        workspace_id=principal.workspace_id,
        workflow_id=workflow_id,
        workflow_name=workflow["name"],
        workflow_version=workflow["current_version"],
        triggered_by="api",
        input=input_data,
        requested_at=requested_at,
    )
    command = ExecuteWorkflow(
        workflow_id=workflow_id,
        workflow_name=workflow["name"],
        workflow_version=workflow["current_version"],
        workflow=workflow["definition"],
        input=input_data,
        triggered_by="api",
        timeout_s=float(options.timeout),
        requested_at=requested_at,
    )
    row = None
    if options.waitForCompletion:
        bound = min(float(options.timeout), state.settings.max_wait_s)
        stored, created, row = await submit_and_wait(adapters, execution, command, key, bound)
    else:
        stored, created = await submit(adapters, execution, command, key)
    headers = {"Location": f"{state.settings.public_base}/v1/executions/{stored.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    if row is not None:
        return ok(completed(row), headers=headers)
    return ok(
        accepted(stored.id, stored.requested_at, state.settings.public_base),
        status=202,
        headers=headers,
    )


def plain_routes() -> list[PlainRoute]:
    """This router's operations that the app serves ahead of FastAPI's routes."""
    return [PlainRoute(router.prefix + EXECUTE_PATH, execute_workflow, methods=["POST"])]


async def _execute_operation(
    workflow_id: str,
    principal: Annotated[Principal, Depends(require(*EXECUTE_SCOPES))],
    key_header: IdempotencyKey = None,
) -> Response:
    """What `execute_workflow` reads, declared for the OpenAPI document."""
    raise AssertionError("documentation only: execute_workflow serves this operation")


router.add_api_route(
    EXECUTE_PATH,
    _execute_operation,
    methods=["POST"],
    name="execute_workflow",
    route_class_override=DocumentedRoute,
    summary="Run the workflow's current version",
    description=(
        "Answers 202 at once, or with `options.waitForCompletion` 200 with the result once "
        "the execution finishes (bounded by `options.timeout` and the server's max wait; "
        "202 when the bound passes first). An `Idempotency-Key` header (up to 200 "
        "characters) makes retries of the same request within 24 h return the same "
        "execution."
    ),
    responses=answers(
        {200: ExecutionCompletedResponse, 202: ExecutionAcceptedResponse},
        errors=(400, 401, 403, 404, 409, 413, 429, 503),
    ),
    openapi_extra=request_body(ExecuteRequest, "Input and options (all optional)"),
)
