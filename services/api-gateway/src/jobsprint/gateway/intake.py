"""Accepting an execution (execute, webhook, retry): record the request, produce its
command, and undo the record when Kafka does not take the command — nothing half-done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from jobsprint.events import TERMINAL_STATUSES, Command, make
from jobsprint.gateway.adapters import Adapters
from jobsprint.gateway.errors import Conflict
from jobsprint.gateway.repository import ExecutionRequest
from jobsprint.gateway.telemetry import EXECUTIONS_REQUESTED

log = logging.getLogger(__name__)

Row = dict[str, Any]


async def submit(
    adapters: Adapters,
    request: ExecutionRequest,
    command: Command,
    idempotency_key: str | None,
) -> tuple[ExecutionRequest, bool]:
    """(the accepted request, True) — or (the earlier request, False) when the idempotency
    key was already used for the same request in the last 24 h."""
    stored, created, record = await _submit(adapters, request, command, idempotency_key)
    if record is not None:
        await record
    return stored, created


async def submit_and_wait(
    adapters: Adapters,
    request: ExecutionRequest,
    command: Command,
    idempotency_key: str | None,
    timeout_s: float,
) -> tuple[ExecutionRequest, bool, Row | None]:
    """`submit`, then wait up to `timeout_s` for the execution to end: its read-model row,
    or None when the time passes first. It listens for the execution before the command
    goes out, so a new execution needs no first read, and records the request while the
    execution runs (the client hears of it only once both are done)."""
    waiters = adapters.waiters
    registered = waiters.expect(request.id)
    try:
        stored, created, record = await _submit(adapters, request, command, idempotency_key)
    except BaseException:
        waiters.forget(request.id, registered)
        raise
    recording = asyncio.create_task(record) if record is not None else None
    expected: asyncio.Future[str] | None = registered
    if not created:  # a replay: the earlier execution may be long finished
        waiters.forget(request.id, registered)
        expected = None
    try:
        row = await waiters.wait_for(
            stored.id,
            terminal_check(adapters, stored.workspace_id, stored.id),
            timeout_s,
            expected=expected,
        )
    finally:
        if recording is not None:
            await recording
    return stored, created, row


async def _submit(
    adapters: Adapters,
    request: ExecutionRequest,
    command: Command,
    idempotency_key: str | None,
) -> tuple[ExecutionRequest, bool, Coroutine[Any, Any, None] | None]:
    """`submit`'s answer, and the recording of a request without idempotency key (its
    command produced) for the caller to run."""
    envelope = make(
        command,
        execution_id=request.id,
        workspace_id=request.workspace_id,
        correlation_id=request.id,
    )
    if idempotency_key is None:
        # nothing to claim: produce, then record the request as produced (one statement)
        await adapters.commands.send(envelope)
        EXECUTIONS_REQUESTED.labels(request.triggered_by).inc()
        return request, True, _record_published(adapters, request)
    stored, created = await adapters.repository.claim_request(request, idempotency_key)
    if not created:
        if not stored.same_request(request):
            raise Conflict(
                "this Idempotency-Key was already used for a different request",
                {"executionId": stored.id},
            )
        return stored, False, None
    try:
        await adapters.commands.send(envelope)
    except Exception:
        await adapters.repository.delete_request(request.id)
        raise
    EXECUTIONS_REQUESTED.labels(request.triggered_by).inc()
    try:
        await adapters.repository.mark_published(request.id)
    except Exception:  # the command is out: the execution is accepted whatever happens here
        log.warning("could not mark %s published", request.id, exc_info=True)
    return request, True, None


async def _record_published(adapters: Adapters, request: ExecutionRequest) -> None:
    try:
        await adapters.repository.record_published(request)
    except Exception:  # the command is out: the execution is accepted whatever happens
        log.warning("could not record request %s", request.id, exc_info=True)


def terminal_check(
    adapters: Adapters, workspace_id: str, execution_id: str
) -> Callable[[], Awaitable[Row | None]]:
    """A waiter check: the execution's read-model row once its status is terminal."""

    async def check() -> Row | None:
        row = await adapters.repository.execution(workspace_id, execution_id)
        if row is not None and row["status"] in TERMINAL_STATUSES:
            return row
        return None

    return check
