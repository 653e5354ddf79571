"""e2e fixtures: one running system per test module, isolated by topics and database; each
test makes its own workspace and token, so tests do not see each other's data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from jobsprint.events import Topics
from jobsprint.runtime.kafka import delete_topics, ensure_topics

from .system import System


@pytest.fixture(scope="module")
def system(infra: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    prefix = f"e{uuid.uuid4().hex[:10]}"
    database = f"e2e_{prefix}"
    with psycopg.connect(infra["admin_url"], autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    asyncio.run(ensure_topics(infra["bootstrap"], Topics(prefix), 3))
    running = System(
        bootstrap=infra["bootstrap"],
        database_url=infra["admin_url"].rsplit("/", 1)[0] + f"/{database}",
        topic_prefix=prefix,
        workdir=tmp_path_factory.mktemp(prefix),
    )
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
        asyncio.run(delete_topics(infra["bootstrap"], Topics(prefix)))
        with psycopg.connect(infra["admin_url"], autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def workspace() -> str:
    return f"ws-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def token(system: System, workspace: str) -> str:
    return system.create_token(workspace)


@pytest.fixture
async def api(system: System, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=system.gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def log_path(system: System, name: str) -> Path:
    return system.workdir / f"{name}.log"
