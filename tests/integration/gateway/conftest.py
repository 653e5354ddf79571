"""Fixtures of the gateway integration tests: the gateway in process (lifespan started by
hand, httpx ASGITransport) over the test's own database and topics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files

import httpx
import pytest

from jobsprint.events import Topics
from jobsprint.gateway.cli import create_token
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.runtime.postgres import migrate
from tests.integration.gateway.support import BASE, Caller, ReadModel, closed_port, running


@pytest.fixture
async def read_model(database: str) -> str:
    """The projector's tables in the test database (the gateway only reads them)."""
    await migrate(database, "projector:public", files("jobsprint.projector") / "migrations")
    return database


@pytest.fixture
def settings(bootstrap: str, topics: Topics, read_model: str) -> GatewaySettings:
    return GatewaySettings(
        database_url=read_model,
        kafka_bootstrap=bootstrap,
        topic_prefix=topics.prefix,
        public_url=BASE,
        metrics_url=f"http://127.0.0.1:{closed_port()}",
        max_wait_s=3,
    )


@pytest.fixture
async def gateway(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings) as (client, _):
        yield client


MakeCaller = Callable[..., Awaitable[Caller]]


@pytest.fixture
def make_caller(read_model: str) -> MakeCaller:
    async def make(workspace: str = "acme", scopes: list[str] | None = None) -> Caller:
        return Caller(*await create_token(read_model, workspace, scopes, "test"))

    return make


@pytest.fixture
async def caller(make_caller: MakeCaller) -> Caller:
    return await make_caller("acme")


@pytest.fixture
def rows(read_model: str) -> ReadModel:
    return ReadModel(read_model)
