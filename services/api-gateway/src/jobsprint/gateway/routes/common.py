"""Helpers shared by the routes: the success envelope, JSON bodies, the gateway state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
from fastapi import Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from jobsprint.gateway.errors import InvalidRequest, validation_error
from jobsprint.gateway.limits import parse_json
from jobsprint.gateway.schemas import MAX_IDEMPOTENCY_KEY

if TYPE_CHECKING:
    from jobsprint.gateway.app import Gateway

M = TypeVar("M", bound=BaseModel)


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(
    data: Any,
    *,
    status: int = 200,
    pagination: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if pagination is not None:
        body["pagination"] = pagination
    return JsonResponse(body, status_code=status, headers=headers)


def gateway(request: Request) -> Gateway:
    state: Gateway = request.app.state.gateway
    return state


async def json_body(request: Request) -> Any:
    """The decoded body (None when empty), depth-checked; 400 when it is not JSON."""
    return parse_json(await request.body())


async def model_body(request: Request, model: type[M]) -> M:
    """The body validated against `model`; an empty body is `{}`."""
    doc = await json_body(request)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidRequest(
            "request body must be a JSON object",
            [{"field": "", "message": "must be a JSON object"}],
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        description=f"1 to {MAX_IDEMPOTENCY_KEY} characters: a repeat of the same request "
        "with the same key within 24 h answers the execution the first one made",
    ),
]


def idempotency_key(key: str | None) -> str | None:
    """The `Idempotency-Key` header's value, checked."""
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest.field(
            IDEMPOTENCY_KEY_HEADER, f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )
    return key
