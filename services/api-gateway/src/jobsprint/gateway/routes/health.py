"""Probes and Prometheus metrics; no authentication."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobsprint.gateway.errors import error_body
from jobsprint.gateway.routes.common import gateway, ok
from jobsprint.gateway.routes.openapi import answers
from jobsprint.gateway.schemas import HealthResponse, ReadinessResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive", responses=answers({200: HealthResponse}))
async def healthz() -> Response:
    return ok({"status": "ok"})


@router.get(
    "/readyz",
    summary="Postgres answers and the Kafka producer is connected",
    responses=answers({200: ReadinessResponse}, errors=(503,)),
)
async def readyz(request: Request) -> Response:
    adapters = gateway(request).adapters

    async def postgres() -> str | None:
        try:
            await asyncio.wait_for(adapters.repository.ping(), 3)
        except Exception as exc:
            return f"Postgres does not answer: {exc or type(exc).__name__}"
        return None

    pg, kafka = await asyncio.gather(postgres(), adapters.commands.unready_reason())
    if pg is None and kafka is None:
        return ok({"status": "ready", "postgres": "ok", "kafka": "ok"})
    reasons = {"postgres": pg or "ok", "kafka": kafka or "ok"}
    message = "; ".join(reason for reason in (pg, kafka) if reason)
    return Response(
        error_body("unavailable", message, reasons),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
