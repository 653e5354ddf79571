"""Fixtures shared by every suite. Integration and e2e tests run against real components:
a Kafka broker and Postgres started (or reused) by scripts/stack.py, and chDB in-process.
Each test gets its own topics and its own database, so tests cannot leak into each other."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import stack  # noqa: E402

from jobsprint.events import Topics  # noqa: E402


@pytest.fixture(scope="session")
def infra() -> dict[str, str]:
    """Kafka and Postgres: reuse the running ones, or start them (left running for speed)."""
    if shutil_which_missing():
        pytest.fail("java and the Postgres binaries are needed (see README prerequisites)")
    stack.postgres_up()
    stack.kafka_up()
    import asyncio

    from jobsprint.runtime.kafka import wait_for_broker

    asyncio.run(wait_for_broker(stack.BOOTSTRAP, 60))
    return {
        "bootstrap": stack.BOOTSTRAP,
        "admin_url": f"postgresql://postgres@127.0.0.1:{stack.PG_PORT}/postgres",
    }


def shutil_which_missing() -> bool:
    import shutil

    return shutil.which("java") is None or not (stack.PG_BIN / "pg_ctl").exists()


@pytest.fixture(scope="session")
def bootstrap(infra: dict[str, str]) -> str:
    return infra["bootstrap"]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def topics(bootstrap: str) -> AsyncIterator[Topics]:
    """Fresh commands/events/dead-letter/state topics for one test."""
    from jobsprint.runtime.kafka import delete_topics, ensure_topics

    made = Topics(unique("t"))
    await ensure_topics(bootstrap, made, int(os.environ.get("JOBSPRINT_TEST_PARTITIONS", "3")))
    yield made
    await delete_topics(bootstrap, made)


@pytest.fixture
def database(infra: dict[str, str]) -> Iterator[str]:
    """A fresh Postgres database for one test; its connection string."""
    import psycopg

    name = unique("t_")
    with psycopg.connect(infra["admin_url"], autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield infra["admin_url"].rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(infra["admin_url"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chDB allows one data folder per process: the test session owns this one."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def chdb_connection(chdb_path: Path) -> Any:
    import chdb

    conn = chdb.connect(str(chdb_path))
    yield conn
    conn.close()


@pytest.fixture
def chdb_database(chdb_connection: Any) -> Iterator[str]:
    """A fresh ClickHouse database inside the session's chDB for one test."""
    name = unique("t_")
    chdb_connection.query(f"CREATE DATABASE {name}")
    yield name
    chdb_connection.query(f"DROP DATABASE IF EXISTS {name}")
