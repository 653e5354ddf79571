"""Domain errors of the gateway, one hierarchy, and the ONE handler that turns them (and
everything else that can go wrong) into `{"success": false, "error": {...}}` answers.

The errors themselves are plain Python, so pure modules (pagination, shaping) can raise them;
the web side (Starlette, FastAPI, psycopg) is imported only by the functions that answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger(__name__)

WWW_AUTHENTICATE = 'Bearer realm="jobsprint"'


class GatewayError(Exception):
    """Root of every error the API answers on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        details: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    """The request is malformed: a field is missing, of the wrong type, out of range, unknown."""

    status = 400
    code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidRequest:
        return cls(f"{field}: {message}", [{"field": field, "message": message}])


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"


class Unauthenticated(GatewayError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, error: str | None = None) -> None:
        challenge = WWW_AUTHENTICATE
        if error:
            challenge += f', error="{error}", error_description="{message}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"rate limit exceeded; retry after {retry_after_s} s",
            {"retryAfter": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )


class Unavailable(GatewayError):
    """A dependency (Kafka, Postgres, the metrics service) cannot be reached right now."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, details: Any = None, *, retry_after_s: int = 5) -> None:
        super().__init__(message, details, headers={"Retry-After": str(retry_after_s)})


def error_body(code: str, message: str, details: Any = None) -> bytes:
    return orjson.dumps(
        {"success": False, "error": {"code": code, "message": message, "details": details}}
    )


def answered_errors() -> tuple[type[Exception], ...]:
    """The exceptions `answer_error` answers where they are raised (Starlette's exception
    middleware, or a plain route itself). Anything else reaches the outermost handler,
    which answers the same 500 and re-raises it to the server."""
    import psycopg
    from fastapi.exceptions import RequestValidationError
    from psycopg_pool import PoolTimeout
    from starlette.exceptions import HTTPException as StarletteHTTPException

    return (
        GatewayError,
        RequestValidationError,
        StarletteHTTPException,
        PoolTimeout,
        psycopg.OperationalError,
        psycopg.DataError,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the single mapping from anything raised to an error answer."""
    for kind in (*answered_errors(), Exception):
        app.add_exception_handler(kind, answer_error)


async def answer_error(request: Request, exc: Exception) -> Response:
    """The one error handler: what the client gets for anything raised while answering."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        gateway = getattr(request.app.state, "gateway", None)
        if gateway is not None:
            gateway.adapters.database_failed()
    return error_response(as_gateway_error(exc))


def error_response(error: GatewayError) -> Response:
    from starlette.responses import Response

    return Response(
        error_body(error.code, error.message, error.details),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )


def as_gateway_error(exc: Exception) -> GatewayError:
    import psycopg
    from fastapi.exceptions import RequestValidationError
    from psycopg_pool import PoolTimeout
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return NotFound("no such route")
        if exc.status_code == 405:
            return MethodNotAllowed(
                "method not allowed on this route", headers=dict(exc.headers or {})
            )
        error = GatewayError(str(exc.detail))
        error.status = exc.status_code
        error.code = "http_error"
        return error
    if isinstance(exc, (PoolTimeout, psycopg.OperationalError)):
        log.warning("database unavailable: %s", exc)
        return Unavailable("the database is unavailable; retry later")
    if isinstance(exc, psycopg.DataError):
        # the value itself cannot be stored or compared (e.g. a NUL character)
        return InvalidRequest(f"a value in the request cannot be stored: {exc}")
    log.error("unhandled error", exc_info=exc)
    return GatewayError("internal error")


def validation_error(errors: Any) -> InvalidRequest:
    """400 from pydantic/FastAPI validation errors, one `{field, message}` per problem."""
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = _dotted(loc)
        message = _message(err)
        details.append({"field": field, "message": message})
    summary = "; ".join(
        f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details[:3]
    )
    return InvalidRequest(f"invalid request: {summary}", details)


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        if part.isdigit():
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "missing":
        return "is required"
    return str(err.get("msg", "invalid value"))
