"""Fault-scenario fixtures. Scenarios that only kill Jobsprint processes run on the shared
Kafka and Postgres with their own topics and database; scenarios that stop the broker or
Postgres get their own (`own_infra`), started with scripts/stack.py on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from jobsprint.events import Topics
from jobsprint.runtime.kafka import delete_topics, ensure_topics, wait_for_broker
from tests.conftest import REPO, stack
from tests.faults.support import FaultSystem

MakeSystem = Callable[..., Awaitable[FaultSystem]]


class Systems:
    """Builds systems (own topics and database on the given Kafka and Postgres) and takes
    them down again, whatever state their infrastructure is in by then."""

    def __init__(self, infra: dict[str, str], workdirs: pytest.TempPathFactory) -> None:
        self.infra = infra
        self.workdirs = workdirs
        self.made: list[tuple[FaultSystem, dict[str, str], str, str]] = []

    async def make(
        self,
        *,
        services: list[str],
        partitions: int = 6,
        extra_env: dict[str, str] | None = None,
        on: dict[str, str] | None = None,
    ) -> FaultSystem:
        where = on or self.infra
        prefix = f"f{uuid.uuid4().hex[:10]}"
        database = f"faults_{prefix}"
        with psycopg.connect(where["admin_url"], autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        await ensure_topics(where["bootstrap"], Topics(prefix), partitions)
        system = FaultSystem(
            bootstrap=where["bootstrap"],
            database_url=where["admin_url"].rsplit("/", 1)[0] + f"/{database}",
            topic_prefix=prefix,
            workdir=self.workdirs.mktemp(prefix),
            extra_env={"JOBSPRINT_PARTITIONS": str(partitions), **(extra_env or {})},
        )
        self.made.append((system, where, prefix, database))
        await asyncio.to_thread(system.start_services, services)
        return system

    async def close(self) -> None:
        for system, where, prefix, database in self.made:
            system.stop_all()
            if os.environ.get("JOBSPRINT_FAULTS_KEEP"):  # debugging: leave topics and database
                print(f"kept topics {prefix}.* and database {database} on {where}")
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(delete_topics(where["bootstrap"], Topics(prefix)), 30)
            with (
                contextlib.suppress(Exception),
                psycopg.connect(where["admin_url"], autocommit=True, connect_timeout=5) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self.made.clear()


@pytest.fixture
async def make_system(
    infra: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MakeSystem]:
    systems = Systems(infra, tmp_path_factory)
    try:
        yield systems.make
    finally:
        await systems.close()


@pytest.fixture(scope="module")
async def module_systems(
    infra: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Systems]:
    systems = Systems(infra, tmp_path_factory)
    try:
        yield systems
    finally:
        await systems.close()


# --- a Kafka broker and a Postgres of our own ------------------------------------------------


def _free_port_pair() -> int:
    """A port whose successor is free too (Kafka's controller listens on port + 1)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free ports")


@dataclass
class OwnInfra:
    """A Kafka broker and a Postgres server that only this test session uses, so scenarios
    can stop and restart them without touching anybody else's."""

    home: Path
    pgdata: Path
    kafka_port: int
    pg_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def infra(self) -> dict[str, str]:
        return {"bootstrap": self.bootstrap, "admin_url": self.admin_url}

    def _stack(self, code: str, timeout_s: float = 180) -> None:
        env = {
            **os.environ,
            "JOBSPRINT_HOME": str(self.home),
            "JOBSPRINT_KAFKA_PORT": str(self.kafka_port),
            "JOBSPRINT_PG_PORT": str(self.pg_port),
            "JOBSPRINT_PGDATA": str(self.pgdata),
            "JOBSPRINT_KAFKA_HEAP": "-Xms256m -Xmx768m",
        }
        script = f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); import stack; {code}"
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stack: {code} failed:\n{done.stdout}\n{done.stderr}")

    def start_kafka(self) -> None:
        self._stack("stack.kafka_up()")
        asyncio.run(wait_for_broker(self.bootstrap, 60))

    def stop_kafka(self) -> None:
        self._stack("stack.stop_pid('kafka', timeout_s=30)")

    def start_postgres(self) -> None:
        self._stack("stack.postgres_up()")

    def stop_postgres(self) -> None:
        self._stack("stack.postgres_down()")

    def kafka_log(self) -> str:
        path = self.home / "logs" / "kafka.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="session")
def own_infra(infra: dict[str, str]) -> Iterator[OwnInfra]:
    """Depends on `infra` so that the Kafka jars are already fetched: they are shared (by a
    symlink) rather than downloaded again."""
    run_id = uuid.uuid4().hex[:8]
    base = Path(f"/var/tmp/jobsprint-faults-{run_id}")
    home = base / "home"
    (home / "kafka").mkdir(parents=True)
    (home / "kafka" / "lib").symlink_to(stack.KAFKA_LIB.resolve())
    own = OwnInfra(home, base / "pgdata", _free_port_pair(), _free_port_pair())
    try:
        own.start_postgres()
        own.start_kafka()
        yield own
    finally:
        with contextlib.suppress(Exception):
            own.stop_kafka()
        with contextlib.suppress(Exception):
            own.stop_postgres()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_infra_up(own_infra: OwnInfra) -> Iterator[OwnInfra]:
    """The own broker and Postgres, started again after a scenario that left one down."""
    yield own_infra
    with contextlib.suppress(Exception):
        own_infra.start_postgres()
    with contextlib.suppress(Exception):
        own_infra.start_kafka()
