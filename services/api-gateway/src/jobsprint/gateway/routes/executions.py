"""Executions: list, get, logs, metrics (proxied), cancel, retry, delete."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from jobsprint.events import (
    TERMINAL_STATUSES,
    CancelExecution,
    DeleteExecution,
    RetryExecution,
    ReusedStep,
    make,
    utcnow,
)
from jobsprint.events.ids import new_execution_id
from jobsprint.gateway.adapters import Adapters
from jobsprint.gateway.auth import require
from jobsprint.gateway.definitions import step_ids
from jobsprint.gateway.errors import Conflict, InvalidRequest, NotFound, Unavailable
from jobsprint.gateway.filters import EXECUTION_STATUSES, LOG_LEVELS, ExecutionFilters
from jobsprint.gateway.intake import submit, terminal_check
from jobsprint.gateway.pagination import make_page, page_request
from jobsprint.gateway.repository import ExecutionRequest
from jobsprint.gateway.routes.common import (
    IdempotencyKey,
    gateway,
    idempotency_key,
    model_body,
    ok,
)
from jobsprint.gateway.routes.openapi import answers, request_body
from jobsprint.gateway.routes.plain import DocumentedRoute, PlainRoute, fixed_paths
from jobsprint.gateway.schemas import (
    DeletedResponse,
    ExecutionAcceptedResponse,
    ExecutionCancelledResponse,
    ExecutionCancellingResponse,
    ExecutionListResponse,
    ExecutionLogsResponse,
    ExecutionMetricsResponse,
    ExecutionResponse,
    RetryRequest,
)
from jobsprint.gateway.shaping import (
    accepted,
    execution_detail,
    execution_item,
    iso,
    log_item,
    pending_execution,
)
from jobsprint.gateway.tokens import READ, WRITE, Principal

router = APIRouter(prefix="/v1/executions", tags=["executions"])

Reader = Annotated[Principal, Depends(require(READ))]
Writer = Annotated[Principal, Depends(require(WRITE))]

# how long cancel and delete wait for the projector to confirm before answering 202
CONFIRM_WAIT_S = 10.0
RETRYABLE = ("error", "cancelled")
GRANULARITIES = ("hour", "day", "week")
ISO_8601 = "ISO 8601 date or date-time (UTC when it has no offset)"

Row = dict[str, Any]


def _not_found(execution_id: str) -> NotFound:
    return NotFound(f"execution {execution_id} not found")


async def _current_status(
    adapters: Adapters, workspace_id: str, execution_id: str
) -> tuple[str, Row | None]:
    """The execution's status and read-model row; `pending` (and no row) when it was
    accepted but not projected yet; NotFound when neither knows it."""
    row = await adapters.repository.execution(workspace_id, execution_id)
    if row is not None:
        return str(row["status"]), row
    if await adapters.repository.published_request(workspace_id, execution_id) is not None:
        return "pending", None
    raise _not_found(execution_id)


@router.get(
    "",
    summary="List executions, newest first (keyset cursors)",
    responses=answers({200: ExecutionListResponse}, errors=(400, 401, 403, 429, 503)),
)
async def list_executions(
    request: Request,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 20,
    after: Annotated[str | None, Query(description="`nextCursor` of the page before")] = None,
    before: Annotated[str | None, Query(description="`prevCursor` of the page after")] = None,
    workflow_id: Annotated[str | None, Query(alias="workflowId")] = None,
    status: Annotated[str | None, Query(json_schema_extra={"enum": [*EXECUTION_STATUSES]})] = None,
    from_date: Annotated[str | None, Query(alias="fromDate", description=ISO_8601)] = None,
    to_date: Annotated[str | None, Query(alias="toDate", description=ISO_8601)] = None,
) -> Response:
    adapters = gateway(request).adapters
    filters = ExecutionFilters.parse(
        workflow_id=workflow_id, status=status, from_date=from_date, to_date=to_date
    )
    page = page_request(
        limit=limit,
        after=after,
        before=before,
        fingerprint=filters.fingerprint(),
        id_prefix="exec",
    )
    rows = await adapters.repository.list_executions(principal.workspace_id, filters, page)
    result = make_page(rows, page, lambda row: str(row["id"]))
    return ok([execution_item(row) for row in result.items], pagination=result.pagination())


# declared before /{execution_id}, which would otherwise take "metrics" for an id
@router.get(
    "/metrics",
    summary="Execution metrics (answered by the metrics service)",
    description="Over `fromDate`..`toDate` (default: the last 30 days), in `granularity` "
    "buckets (default: day).",
    responses=answers({200: ExecutionMetricsResponse}, errors=(400, 401, 403, 429, 503)),
)
async def execution_metrics(
    request: Request,
    principal: Reader,
    workflow_id: Annotated[str | None, Query(alias="workflowId")] = None,
    from_date: Annotated[str | None, Query(alias="fromDate", description=ISO_8601)] = None,
    to_date: Annotated[str | None, Query(alias="toDate", description=ISO_8601)] = None,
    granularity: Annotated[str | None, Query(json_schema_extra={"enum": [*GRANULARITIES]})] = None,
) -> Response:
    state = gateway(request)
    # the metrics service checks the values; the workspace is always the caller's
    given = {
        "workflowId": workflow_id,
        "fromDate": from_date,
        "toDate": to_date,
        "granularity": granularity,
    }
    params = {name: value for name, value in given.items() if value is not None}
    params["workspaceId"] = principal.workspace_id
    try:
        answer = await state.adapters.metrics_http.get("/v1/metrics", params=params)
    except httpx.HTTPError as exc:
        raise Unavailable(f"the metrics service is unavailable: {type(exc).__name__}") from None
    if answer.status_code in (200, 400):
        return Response(
            answer.content, status_code=answer.status_code, media_type="application/json"
        )
    raise Unavailable(
        "the metrics service could not answer", {"upstreamStatus": answer.status_code}
    )


GET_PATH = "/{execution_id}"


async def get_execution(request: Request) -> Response:
    """`GET /v1/executions/{execution_id}`, polled by clients waiting for a result: a plain
    route (routes/plain.py), one read of the execution with its steps and logs."""
    state = gateway(request)
    principal = await state.auth.authenticate(request, (READ,))
    execution_id: str = request.path_params["execution_id"]
    repository = state.adapters.repository
    found = await repository.execution_details(principal.workspace_id, execution_id)
    if found.row is not None:
        return ok(execution_detail(found.row, found.steps, found.logs))
    if found.request is not None:
        return ok(pending_execution(found.request))
    raise _not_found(execution_id)


async def _get_operation(execution_id: str, principal: Reader) -> Response:
    # what `get_execution` reads, declared for the OpenAPI document (no docstring: FastAPI
    # would publish it as the operation's description)
    raise AssertionError("documentation only: get_execution serves this operation")


router.add_api_route(
    GET_PATH,
    _get_operation,
    methods=["GET"],
    name="get_execution",
    route_class_override=DocumentedRoute,
    summary="An execution with its steps and logs",
    responses=answers({200: ExecutionResponse}, errors=(400, 401, 403, 404, 429, 503)),
)


def plain_routes() -> list[PlainRoute]:
    """This router's operations that the app serves ahead of FastAPI's routes."""
    get = PlainRoute(
        router.prefix + GET_PATH, get_execution, methods=["GET"], yields_to=fixed_paths(router)
    )
    return [get]


@router.get(
    "/{execution_id}/logs",
    summary="An execution's logs, in order",
    responses=answers({200: ExecutionLogsResponse}, errors=(400, 401, 403, 404, 429, 503)),
)
async def get_logs(
    request: Request,
    execution_id: str,
    principal: Reader,
    level: Annotated[str | None, Query(json_schema_extra={"enum": [*LOG_LEVELS]})] = None,
    step_id: Annotated[str | None, Query(alias="stepId")] = None,
) -> Response:
    adapters = gateway(request).adapters
    if level is not None and level not in LOG_LEVELS:
        raise InvalidRequest.field("level", f"must be one of {', '.join(LOG_LEVELS)}")
    _, row = await _current_status(adapters, principal.workspace_id, execution_id)
    logs = (
        []
        if row is None
        else await adapters.repository.logs(execution_id, level=level, step_id=step_id)
    )
    return ok({"logs": [log_item(entry) for entry in logs]})


@router.post(
    "/{execution_id}/cancel",
    summary="Cancel a pending or running execution",
    description=(
        "200 once the execution is cancelled; 202 `cancelling` when it has not stopped "
        "within 10 s; 409 when it had already finished (or finished first)."
    ),
    responses=answers(
        {200: ExecutionCancelledResponse, 202: ExecutionCancellingResponse},
        errors=(400, 401, 403, 404, 409, 429, 503),
    ),
)
async def cancel_execution(request: Request, execution_id: str, principal: Writer) -> Response:
    adapters = gateway(request).adapters
    status, _ = await _current_status(adapters, principal.workspace_id, execution_id)
    if status in TERMINAL_STATUSES:
        raise Conflict(f"execution already finished ({status})", {"status": status})
    await adapters.commands.send(
        make(
            CancelExecution(requested_at=utcnow()),
            execution_id=execution_id,
            workspace_id=principal.workspace_id,
            correlation_id=execution_id,
        )
    )
    row = await adapters.waiters.wait_for(
        execution_id,
        terminal_check(adapters, principal.workspace_id, execution_id),
        CONFIRM_WAIT_S,
    )
    if row is None:
        return ok({"id": execution_id, "status": "cancelling"}, status=202)
    if row["status"] != "cancelled":
        raise Conflict(
            f"execution finished ({row['status']}) before it could be cancelled",
            {"status": row["status"]},
        )
    cancelled_at = row.get("cancelled_at") or row.get("finished_at")
    return ok({"id": execution_id, "status": "cancelled", "cancelledAt": iso(cancelled_at)})


@router.post(
    "/{execution_id}/retry",
    status_code=202,
    summary="Run a failed or cancelled execution again, reusing the steps that succeeded",
    description=(
        "Body (all optional): `fromStep` (default: the failed step, else the first step "
        'that did not succeed), `workflowVersion` (`"latest"` or a number; default: the '
        "version the original ran), `inputData` (default: the original input). Steps before "
        "`fromStep` that succeeded are reused, not run again. Honours `Idempotency-Key`. "
        "409 when the execution did not fail and was not cancelled."
    ),
    responses=answers(
        {202: ExecutionAcceptedResponse}, errors=(400, 401, 403, 404, 409, 413, 429, 503)
    ),
    openapi_extra=request_body(RetryRequest, "What to run again (all optional)"),
)
async def retry_execution(
    request: Request, execution_id: str, principal: Writer, key_header: IdempotencyKey = None
) -> Response:
    state = gateway(request)
    adapters = state.adapters
    repository = adapters.repository
    ws = principal.workspace_id
    body = await model_body(request, RetryRequest)
    key = idempotency_key(key_header)
    status, original = await _current_status(adapters, ws, execution_id)
    if original is None or status not in RETRYABLE:
        raise Conflict(
            f"only failed or cancelled executions can be retried; this one is {status}",
            {"status": status},
        )
    version, definition, workflow_name = await _retry_definition(
        adapters, ws, original, body.workflowVersion
    )
    steps = await repository.steps(execution_id)
    from_step = _from_step(body.fromStep, step_ids(definition), steps, version)
    reused = _reused_steps(step_ids(definition), from_step, steps)
    input_data = body.inputData if body.inputData is not None else original["input"]
    requested_at = utcnow()
    retry = ExecutionRequest(
        id=new_execution_id(),
        workspace_id=ws,
        workflow_id=original["workflow_id"],
        workflow_name=workflow_name,
        workflow_version=version,
        triggered_by="retry",
        input=input_data,
        requested_at=requested_at,
        original_execution_id=execution_id,
    )
    command = RetryExecution(
        workflow_id=original["workflow_id"],
        workflow_name=workflow_name,
        workflow_version=version,
        workflow=definition,
        input=input_data,
        timeout_s=float(original["timeout_s"]),
        requested_at=requested_at,
        original_execution_id=execution_id,
        from_step=from_step,
        reused_steps=tuple(reused),
    )
    stored, created = await submit(adapters, retry, command, key)
    headers = {"Location": f"{state.settings.public_base}/v1/executions/{stored.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return ok(
        accepted(
            stored.id,
            stored.requested_at,
            state.settings.public_base,
            original_execution_id=execution_id,
        ),
        status=202,
        headers=headers,
    )


async def _retry_definition(
    adapters: Adapters, workspace_id: str, original: Row, wanted: int | str | None
) -> tuple[int, dict[str, Any], str]:
    """(version, definition snapshot, workflow name) the retry runs."""
    workflow_id = original["workflow_id"]
    if wanted == "latest":
        current = await adapters.repository.workflow(workspace_id, workflow_id)
        if current is None:
            raise NotFound(f"workflow {workflow_id} no longer exists")
        return int(current["current_version"]), current["definition"], str(current["name"])
    version = original["workflow_version"] if wanted is None else int(wanted)
    found = await adapters.repository.workflow_version(workspace_id, workflow_id, version)
    if found is None:
        if wanted is not None:
            raise InvalidRequest.field(
                "workflowVersion", f"workflow {workflow_id} has no version {version}"
            )
        raise NotFound(f"workflow {workflow_id} no longer exists")
    if found["deleted_at"] is not None:
        raise NotFound(f"workflow {workflow_id} no longer exists")
    definition = found["definition"]
    return version, definition, str(definition.get("name") or found["name"])


def _from_step(wanted: str | None, order: list[str], steps: list[Row], version: int) -> str:
    if wanted is not None:
        if wanted not in order:
            raise InvalidRequest.field(
                "fromStep", f"{wanted!r} is not a step of version {version} ({', '.join(order)})"
            )
        return wanted
    for step in steps:  # in run order: the step that failed
        if step["status"] == "error" and step["step_id"] in order:
            return str(step["step_id"])
    succeeded = {step["step_id"] for step in steps if step["status"] == "success"}
    for step_id in order:
        if step_id not in succeeded:
            return step_id
    return order[0]  # every step succeeded: run the whole workflow again


def _reused_steps(order: list[str], from_step: str, steps: list[Row]) -> list[ReusedStep]:
    """The original's successful steps positioned before `from_step`, reused as they are."""
    by_id = {step["step_id"]: step for step in steps}
    reused = []
    for step_id in order[: order.index(from_step)]:
        step = by_id.get(step_id)
        if step is None:
            continue  # never ran (skipped by a condition): nothing to reuse
        if step["status"] != "success":
            raise InvalidRequest.field(
                "fromStep",
                f"step {step_id!r} comes before {from_step!r} and did not succeed "
                f"({step['status']}); retry from {step_id!r} or earlier",
            )
        reused.append(
            ReusedStep(
                step_id=step_id,
                step_name=step["step_name"],
                step_type=step["step_type"],
                input=step["input"],
                output=step["output"],
                started_at=step["started_at"],
                finished_at=step["finished_at"],
            )
        )
    return reused


@router.delete(
    "/{execution_id}",
    summary="Delete a finished execution",
    description="200 once deleted; 202 when the deletion is accepted but not confirmed "
    "within 10 s. Pending or running executions answer 409 (cancel them first).",
    responses=answers(
        {200: DeletedResponse, 202: (DeletedResponse, "Accepted; not confirmed within 10 s")},
        errors=(400, 401, 403, 404, 409, 429, 503),
    ),
)
async def delete_execution(request: Request, execution_id: str, principal: Writer) -> Response:
    adapters = gateway(request).adapters
    ws = principal.workspace_id
    status, row = await _current_status(adapters, ws, execution_id)
    if row is None or status not in TERMINAL_STATUSES:
        raise Conflict(
            f"only finished executions can be deleted; this one is {status}", {"status": status}
        )
    await adapters.commands.send(
        make(
            DeleteExecution(requested_at=utcnow(), last_seq=row["last_seq"]),
            execution_id=execution_id,
            workspace_id=ws,
            correlation_id=execution_id,
        )
    )
    await adapters.repository.delete_request(execution_id)

    async def gone() -> bool | None:
        return True if await adapters.repository.execution(ws, execution_id) is None else None

    confirmed = await adapters.waiters.wait_for(execution_id, gone, CONFIRM_WAIT_S)
    return ok({"id": execution_id, "deleted": True}, status=200 if confirmed else 202)
