"""The HTTP application: `create_app(settings)` wires routes, middleware, the error handler
and a lifespan that migrates the gateway's tables and starts the adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import FastAPI

from jobsprint.gateway.adapters import Adapters, build_adapters
from jobsprint.gateway.auth import Authenticator
from jobsprint.gateway.errors import install_error_handlers
from jobsprint.gateway.limits import BodyLimitMiddleware, RateLimiter
from jobsprint.gateway.routes import executions, health, hooks, workflows
from jobsprint.gateway.routes.openapi import finish_document
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.telemetry import RequestMetricsMiddleware
from jobsprint.runtime.postgres import migrate

MIGRATIONS_COMPONENT = "gateway"


@dataclass
class Gateway:
    """What request handlers reach through `request.app.state.gateway`."""

    settings: GatewaySettings
    adapters: Adapters
    auth: Authenticator
    limiter: RateLimiter


class GatewayApp(FastAPI):
    """FastAPI whose `/openapi.json` says what the gateway answers (see `finish_document`)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = finish_document(super().openapi())
        return self.openapi_schema


async def apply_migrations(database_url: str) -> list[str]:
    return await migrate(
        database_url, MIGRATIONS_COMPONENT, files("jobsprint.gateway") / "migrations"
    )


def create_app(settings: GatewaySettings, *, adapters: Adapters | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await apply_migrations(settings.database_url)
        used = adapters or build_adapters(settings)
        await used.start()
        limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        auth = Authenticator(used.repository, limiter, cache_seconds=settings.token_cache_seconds)
        app.state.gateway = Gateway(settings, used, auth, limiter)
        try:
            yield
        finally:
            await used.close()

    app = GatewayApp(
        title="Jobsprint API",
        version="1.0",
        description=(
            "Workflow executions. Authenticate with `Authorization: Bearer <token>`; "
            "webhook triggers (`POST /v1/hooks/{hookToken}`) are authenticated by the hook "
            "token in their URL instead. Every answer is an envelope: "
            '`{"success": true, "data": …}` or '
            '`{"success": false, "error": {"code", "message", "details"}}`.'
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # before FastAPI's routes, so the hot path is matched first (see routes/plain.py)
    app.router.routes[0:0] = [*workflows.plain_routes(), *executions.plain_routes()]
    app.include_router(health.router)
    app.include_router(workflows.router)
    app.include_router(executions.router)
    app.include_router(hooks.router)
    # outermost first: time everything, then refuse oversized bodies before parsing
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware)
    return app
