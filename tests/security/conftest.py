"""Security-suite fixtures: running systems (real processes on the shared Kafka and
Postgres, each with its own topics and database), tokens of two workspaces, and local HTTP
servers standing in for the internal services an `http` step must not reach."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from jobsprint.events import Topics
from jobsprint.runtime.kafka import delete_topics, ensure_topics
from tests.e2e.system import System

# an address of the loopback network the `http` steps of the security systems may reach:
# 127.0.0.3 is allow-listed, 127.0.0.1 (and every other private address) is not
ALLOWED_HOST = "127.0.0.3"


class Systems:
    def __init__(self, infra: dict[str, str], workdirs: pytest.TempPathFactory) -> None:
        self.infra = infra
        self.workdirs = workdirs
        self.made: list[tuple[System, str, str]] = []

    async def make(self, services: list[str], extra_env: dict[str, str] | None = None) -> System:
        prefix = f"s{uuid.uuid4().hex[:10]}"
        database = f"security_{prefix}"
        with psycopg.connect(self.infra["admin_url"], autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        await ensure_topics(self.infra["bootstrap"], Topics(prefix), 3)
        system = System(
            bootstrap=self.infra["bootstrap"],
            database_url=self.infra["admin_url"].rsplit("/", 1)[0] + f"/{database}",
            topic_prefix=prefix,
            workdir=self.workdirs.mktemp(prefix),
            extra_env={"JOBSPRINT_HTTP_ALLOW_LIST": ALLOWED_HOST, **(extra_env or {})},
        )
        self.made.append((system, prefix, database))

        def start() -> None:
            for name in services:
                system.start(name)
            for name in list(system.processes):
                system.wait_ready(name)

        await asyncio.to_thread(start)
        return system

    async def close(self) -> None:
        for system, prefix, database in self.made:
            system.stop_all()
            with contextlib.suppress(Exception):
                await delete_topics(self.infra["bootstrap"], Topics(prefix))
            with psycopg.connect(self.infra["admin_url"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def security_systems(
    infra: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Systems]:
    systems = Systems(infra, tmp_path_factory)
    try:
        yield systems
    finally:
        await systems.close()


@pytest.fixture(scope="session")
async def secured(security_systems: Systems) -> System:
    """The system most security tests share: every service, the metrics one included."""
    return await security_systems.make(
        ["metrics", "projector", "executor-1", "executor-2", "api-gateway"]
    )


@pytest.fixture(scope="session")
async def spare(security_systems: Systems) -> System:
    """A smaller second system whose allow-list also names 127.0.0.1. The tests that may
    break an executor (untrusted text) run here, away from `secured`."""
    return await security_systems.make(
        ["projector", "executor-1", "api-gateway"],
        extra_env={"JOBSPRINT_HTTP_ALLOW_LIST": f"{ALLOWED_HOST},127.0.0.1"},
    )


@dataclass
class Tenant:
    workspace: str
    token: str
    headers: dict[str, str]


def tenant(system: System, *scopes: str) -> Tenant:
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    token = system.create_token(workspace, *scopes)
    return Tenant(workspace, token, {"Authorization": f"Bearer {token}"})


@contextlib.asynccontextmanager
async def client_for(system: System, who: Tenant | None = None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=system.gateway_url, headers=who.headers if who else {}, timeout=60
    ) as client:
        yield client


async def create_workflow(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await client.post(
        "/v1/workflows", json={"trigger": {"type": "manual"}, **definition}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def run(
    client: httpx.AsyncClient, workflow_id: str, input_data: Any, timeout: int = 30
) -> dict[str, Any]:
    """Execute and wait for the result (projected); the execution's details."""
    response = await client.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"inputData": input_data, "options": {"waitForCompletion": True, "timeout": timeout}},
    )
    assert response.status_code == 200, response.text
    execution_id = response.json()["data"]["executionId"]
    detail = await client.get(f"/v1/executions/{execution_id}")
    assert detail.status_code == 200, detail.text
    data: dict[str, Any] = detail.json()["data"]
    return data


def table_counts(database_url: str, *tables: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        found = {}
        for table in tables:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            found[table] = int(row[0]) if row else 0
        return found


# --- local servers ---------------------------------------------------------------------------


class Target:
    """A local HTTP server; every request is counted. `GET /redirect?to=URL` answers 302 to
    URL, `GET /big?mib=N` answers N MiB of text with ANSI escapes and control characters,
    anything else answers `{"ok": true}`."""

    def __init__(self, host: str) -> None:
        self.hits: Counter[str] = Counter()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                target.hits[parts.path] += 1
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query["to"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parts.path == "/big":
                    line = b"\x1b[31mRED\x1b[0m \x07bell \x00nul \x08 text\r\n"
                    size = int(float(query.get("mib", "1")) * 1024 * 1024)
                    body = (line * (size // len(line) + 1))[:size]
                    content_type = "text/plain"
                else:
                    body = json.dumps({"ok": True}).encode()
                    content_type = "application/json"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def allowed_target() -> Iterator[Target]:
    """On the allow-listed loopback address."""
    server = Target(ALLOWED_HOST)
    yield server
    server.close()


@pytest.fixture(scope="session")
def internal_target() -> Iterator[Target]:
    """On 127.0.0.1: an internal service no `http` step may reach."""
    server = Target("127.0.0.1")
    yield server
    server.close()
