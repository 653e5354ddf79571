"""How the routes are described in the OpenAPI document: each route declares the answers it
can give (`answers`) and, when it reads a JSON body itself, that body (`request_body`);
`finish_document` completes what FastAPI generates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from jobsprint.gateway.schemas import ErrorResponse

REF_PREFIX = "#/components/schemas/"

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}

# status -> (description, documented headers); every error answers the ErrorResponse envelope
ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "Invalid input: a malformed body, parameter, header or cursor; `details` names "
        "each field and what is wrong with it",
        {},
    ),
    401: (
        "Missing, malformed, unknown or revoked bearer token (or a token in the query string)",
        {
            "WWW-Authenticate": {
                "description": 'Bearer realm="jobsprint", with the reason when there is one',
                "schema": {"type": "string"},
            }
        },
    ),
    403: ("The token lacks the scope this operation needs", {}),
    404: ("Not found in the caller's workspace", {}),
    409: (
        "The request conflicts with the resource's state (see the operation's description), "
        "or reuses an `Idempotency-Key` for a different request",
        {},
    ),
    413: ("The request body is over the size limit", {}),
    429: ("Rate limit exceeded", _RETRY_AFTER),
    503: ("A dependency (Postgres, Kafka, the metrics service) is unavailable", _RETRY_AFTER),
}

Success = type[BaseModel] | tuple[type[BaseModel], str]


def answers(
    success: Mapping[int, Success], errors: Iterable[int] = ()
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: its success bodies (a model, described by its docstring,
    or `(model, description)`) and the error statuses it can answer, each with the one error
    envelope."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status, answer in success.items():
        model, description = (
            answer if isinstance(answer, tuple) else (answer, _first_line(answer.__doc__))
        )
        documented[status] = {"model": model, "description": description}
    for status in errors:
        if status not in ERRORS:
            raise ValueError(f"no error answer {status} is described; add it to ERRORS")
        description, headers = ERRORS[status]
        documented[status] = {"model": ErrorResponse, "description": description}
        if headers:
            documented[status]["headers"] = headers
    return documented


def request_body(
    schema: type[BaseModel] | dict[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    """The `openapi_extra=` of a route that reads its JSON body itself (`common.json_body`,
    `common.model_body`), so FastAPI cannot see it: a model's schema or a plain JSON schema.
    The model's nested definitions are moved into the components by `finish_document`."""
    if not isinstance(schema, dict):
        schema = schema.model_json_schema(ref_template=REF_PREFIX + "{model}")
    return {
        "requestBody": {
            "description": description,
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's document, in place (it is cached): drop the default 422 answers —
    invalid input answers 400 with the error envelope, which the routes declare — and move
    the nested definitions of `request_body` schemas into the components."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if _is_fastapi_validation_answer(responses.get("422")):
                del responses["422"]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                _hoist_definitions(body["schema"], components)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return document


def _is_fastapi_validation_answer(answer: dict[str, Any] | None) -> bool:
    if answer is None:
        return False
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == REF_PREFIX + "HTTPValidationError")


def _hoist_definitions(schema: dict[str, Any], components: dict[str, Any]) -> None:
    for name, definition in schema.pop("$defs", {}).items():
        known = components.setdefault(name, definition)
        if known != definition:
            raise ValueError(f"two different schemas are named {name!r} in the document")


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else "Success"
