"""Webhook triggers. The hook token in the URL is the credential (no bearer token): anyone
holding the `hookUrl` of a webhook workflow can start it, so treat it like a password.
PUT the workflow with `"trigger": {"type": "manual"}` to disable the hook."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from jobsprint.events import ExecuteWorkflow, utcnow
from jobsprint.events.ids import new_execution_id
from jobsprint.gateway.errors import InvalidRequest, NotFound
from jobsprint.gateway.intake import submit
from jobsprint.gateway.repository import ExecutionRequest
from jobsprint.gateway.routes.common import (
    IdempotencyKey,
    gateway,
    idempotency_key,
    json_body,
    ok,
)
from jobsprint.gateway.routes.openapi import answers, request_body
from jobsprint.gateway.schemas import ExecuteOptions, ExecutionAcceptedResponse
from jobsprint.gateway.shaping import accepted

router = APIRouter(prefix="/v1/hooks", tags=["webhooks"])

_HOOK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


@router.post(
    "/{hook_token}",
    status_code=202,
    summary="Start a webhook workflow; the JSON body becomes its inputData",
    description=(
        "No Authorization header: the hook token in the path authenticates the call. "
        "Any JSON object is accepted as the execution's `inputData` (an empty body is {}). "
        "Answers 202 with the execution id; unknown or deleted hooks answer 404."
    ),
    responses=answers({202: ExecutionAcceptedResponse}, errors=(400, 404, 409, 413, 429, 503)),
    openapi_extra=request_body(
        {"type": "object", "additionalProperties": True}, "The execution's inputData"
    ),
)
async def trigger_hook(
    request: Request, hook_token: str, key_header: IdempotencyKey = None
) -> Response:
    state = gateway(request)
    adapters = state.adapters
    if not _HOOK_TOKEN.match(hook_token):
        raise NotFound("no such hook")
    workflow = await adapters.repository.workflow_by_hook(hook_token)
    if workflow is None:
        raise NotFound("no such hook")
    state.limiter.check(f"hook:{workflow['id']}")
    doc = await json_body(request)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidRequest(
            "the webhook body must be a JSON object",
            [{"field": "", "message": "must be a JSON object"}],
        )
    key = idempotency_key(key_header)
    requested_at = utcnow()
    execution = ExecutionRequest(
        id=new_execution_id(),
        workspace_id=workflow["workspace_id"],
        workflow_id=workflow["id"],
        workflow_name=workflow["name"],
        workflow_version=workflow["current_version"],
        triggered_by="webhook",
        input=doc,
        requested_at=requested_at,
    )
    command = ExecuteWorkflow(
        workflow_id=workflow["id"],
        workflow_name=workflow["name"],
        workflow_version=workflow["current_version"],
        workflow=workflow["definition"],
        input=doc,
        triggered_by="webhook",
        timeout_s=float(ExecuteOptions().timeout),
        requested_at=requested_at,
    )
    stored, created = await submit(adapters, execution, command, key)
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return ok(
        accepted(stored.id, stored.requested_at, state.settings.public_base),
        status=202,
        headers=headers,
    )
