"""CPU per request of the gateway's HTTP application, in process: raw ASGI messages into
the real app (`create_app`: middleware, routing, auth, rate limit, validation, shaping,
metrics), with stand-in adapters whose Postgres calls and token lookup return at once and
a real CommandBus whose Kafka producer acknowledges at once (so the envelope is still
encoded). No server, no sockets: what is left is the gateway's own code and its framework.

    uv run --all-packages python bench/gateway_route_bench.py
    uv run --all-packages python bench/gateway_route_bench.py --requests 5000 --rounds 7
    uv run --all-packages python bench/gateway_route_bench.py --case execute --rounds 30

Cases: `execute` (POST /v1/workflows/{id}/execute, 202), `execute+key` (the same with a
fresh Idempotency-Key each time), `get` (GET /v1/executions/{id}, also a plain route
since session 5) and `healthz`. Times are CPU time of this process
(time.process_time), the best of --rounds rounds, the cases measured alternately; µs per
request. The third command, under `py-spy record`, shows where the execute time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import orjson

from jobsprint.events import Topics
from jobsprint.gateway.adapters import Adapters
from jobsprint.gateway.app import Gateway, create_app
from jobsprint.gateway.auth import Authenticator
from jobsprint.gateway.commands import CommandBus
from jobsprint.gateway.limits import RateLimiter
from jobsprint.gateway.repository import ExecutionDetails, ExecutionRequest
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.tokens import READ, WORKFLOWS, WRITE, hash_token
from jobsprint.gateway.waiters import ExecutionWaiters
from jobsprint.gateway.workflow_cache import WorkflowCache

Row = dict[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

TOKEN = "jsp_" + "b" * 43
WORKSPACE = "ws_bench"
WORKFLOW_ID = "wf_01jgz0000000000000000000"
EXECUTION_ID = "exec_01jgz0000000000000000000"
AT = datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
DEFINITION = {
    "name": "Email Auto-Responder",
    "description": "answers support mail",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "node_1",
            "name": "Shape",
            "type": "transform",
            "params": {"output": {"to": "{{ input.email.from }}"}},
        },
        {"id": "node_2", "name": "Say", "type": "log", "params": {"message": "hello"}},
    ],
    "output": {"to": "{{ steps.node_1.output.to }}"},
}
BODY = orjson.dumps({"inputData": {"email": {"from": "user@example.com"}}})


class InstantRepository:
    """Answers what the execute and get routes ask, at once."""

    def __init__(self) -> None:
        self.token = {
            "id": "tok_bench",
            "workspace_id": WORKSPACE,
            "token_hash": hash_token(TOKEN),
            "scopes": [READ, WRITE, WORKFLOWS],
            "revoked_at": None,
        }
        self.workflow_row = {
            "id": WORKFLOW_ID,
            "name": DEFINITION["name"],
            "current_version": 1,
            "definition": DEFINITION,
        }
        self.execution_row = {
            "id": EXECUTION_ID,
            "workflow_id": WORKFLOW_ID,
            "workflow_name": DEFINITION["name"],
            "workflow_version": 1,
            "status": "success",
            "triggered_by": "api",
            "input": {"email": {"from": "user@example.com"}},
            "output": {"to": "user@example.com"},
            "error": None,
            "original_execution_id": None,
            "created_at": AT,
            "started_at": AT,
            "finished_at": AT,
            "cancelled_at": None,
            "duration_ms": 5,
        }

    async def token_by_hash(self, token_hash: bytes) -> Row | None:
        return self.token if token_hash == self.token["token_hash"] else None

    async def workflow(self, workspace_id: str, workflow_id: str) -> Row | None:
        return self.workflow_row if workflow_id == WORKFLOW_ID else None

    async def record_published(self, request: ExecutionRequest) -> None:
        return None

    async def claim_request(
        self, request: ExecutionRequest, idempotency_key: str
    ) -> tuple[ExecutionRequest, bool]:
        return request, True

    async def mark_published(self, execution_id: str) -> None:
        return None

    async def execution_details(self, workspace_id: str, execution_id: str) -> ExecutionDetails:
        row = self.execution_row if execution_id == EXECUTION_ID else None
        return ExecutionDetails(row, [], [], None)


class InstantProducer:
    """An aiokafka producer that acknowledges at once."""

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        return None


def bench_app(settings: GatewaySettings) -> ASGI:
    """The real application over the stand-ins, its state set as the lifespan would (the
    lifespan itself migrates Postgres and starts the adapters)."""
    commands = CommandBus(settings.kafka_bootstrap, Topics(settings.topic_prefix))
    commands._producer = cast(Any, InstantProducer())
    workflows = WorkflowCache()
    workflows.listening()  # as when the LISTEN connection is up: definitions are cached
    repository = cast(Any, InstantRepository())
    adapters = Adapters(
        pool=cast(Any, None),
        repository=repository,
        commands=commands,
        waiters=ExecutionWaiters("", workflows=workflows),
        metrics_http=httpx.AsyncClient(),
        workflows=workflows,
    )
    app = create_app(settings, adapters=adapters)
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    auth = Authenticator(repository, limiter, cache_seconds=settings.token_cache_seconds)
    app.state.gateway = Gateway(settings, adapters, auth, limiter)
    return cast(ASGI, app)


def scope_of(method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """What uvicorn hands the application."""
    raw = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"python-httpx/0.28.1")]
    raw += [(b"accept", b"*/*"), (b"accept-encoding", b"gzip, deflate")]
    if body:
        raw += [(b"content-type", b"application/json")]
        raw += [(b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
        "state": {},
    }


async def call(
    app: ASGI, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One request through the application: (status, body)."""
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope_of(method, path, headers, body), receive, send)
    return status, b"".join(chunks)


Request = Callable[[int], Awaitable[tuple[int, bytes]]]


def cases(app: ASGI) -> dict[str, tuple[int, Request]]:
    """name -> (expected status, one request)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    execute = f"/v1/workflows/{WORKFLOW_ID}/execute"

    def plain(i: int) -> Awaitable[tuple[int, bytes]]:
        return call(app, "POST", execute, auth, BODY)

    def keyed(i: int) -> Awaitable[tuple[int, bytes]]:
        return call(app, "POST", execute, {**auth, "Idempotency-Key": f"bench-{i}"}, BODY)

    def get(i: int) -> Awaitable[tuple[int, bytes]]:
        return call(app, "GET", f"/v1/executions/{EXECUTION_ID}", auth)

    def healthz(i: int) -> Awaitable[tuple[int, bytes]]:
        return call(app, "GET", "/healthz", {})

    return {
        "execute": (202, plain),
        "execute+key": (202, keyed),
        "get": (200, get),
        "healthz": (200, healthz),
    }


async def run_round(expected: int, request: Request, n: int, offset: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per request over `n` requests, one after another."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        status, body = await request(offset + i)
        if status != expected:
            raise AssertionError(f"answered {status}, not {expected}: {body[:300]!r}")
    return (
        (time.process_time() - cpu) / n * 1e6,
        (time.perf_counter() - wall) / n * 1e6,
    )


async def main(requests: int, rounds: int, only: list[str] | None) -> None:
    settings = GatewaySettings(
        public_url="http://127.0.0.1:8080",
        rate_limit_per_s=1e9,  # the limiter runs, but never refuses the benchmark's token
        rate_limit_burst=1_000_000_000,
    )
    app = bench_app(settings)
    chosen = {k: v for k, v in cases(app).items() if only is None or k in only}
    for expected, request in chosen.values():  # warm up: caches, lazy imports
        await run_round(expected, request, max(200, requests // 10), 10_000_000)
    best: dict[str, tuple[float, float]] = {}
    for r in range(rounds):
        for name, (expected, request) in chosen.items():
            measured = await run_round(expected, request, requests, (r + 1) * requests)
            if name not in best or measured[0] < best[name][0]:
                best[name] = measured
    print(f"{requests} requests per round, best of {rounds} rounds")
    print(f"{'case':<14}{'CPU µs/request':>16}{'wall µs/request':>17}")
    for name, (cpu, wall) in best.items():
        print(f"{name:<14}{cpu:>16.1f}{wall:>17.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round and case")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.case))
