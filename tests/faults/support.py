"""What the fault scenarios share: a `System` with a supervisor standing in for the
orchestrator (a process that dies is started again, as Kubernetes would), a local HTTP
server for `http` steps, readers of the events and dead-letter topics (read committed), and
audits that count what was lost or shown twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from jobsprint.events import (
    DeadLetter,
    Envelope,
    ExecutionCancelled,
    ExecutionDeleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    Payload,
    StepCompleted,
    StepStarted,
    UndecodableMessage,
    decode,
)
from tests.e2e.system import System

TERMINAL = ("success", "error", "cancelled")
TERMINAL_EVENTS = (ExecutionSucceeded, ExecutionFailed, ExecutionCancelled)


# --- the system, supervised ------------------------------------------------------------------


@dataclass
class FaultSystem(System):
    """A `System` whose processes can be started without waiting (a restart after a crash
    may fail until the dependency is back) and are watched by a `Supervisor`."""

    exits: list[tuple[str, int, float]] = field(default_factory=list)

    def start_services(self, names: Iterable[str]) -> None:
        for name in names:
            self.start(name)
        for name in list(self.processes):
            self.wait_ready(name)

    def executors(self) -> list[str]:
        return sorted(n for n in self.processes if n.startswith("executor"))


class Supervisor:
    """Restarts the wanted processes that died, like an orchestrator: at once after the first
    exit, then with a growing back-off while a process keeps failing (a crash loop)."""

    def __init__(self, system: FaultSystem, wanted: Iterable[str]) -> None:
        self.system = system
        self.wanted = set(wanted)
        self.restarts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._next_start: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def hold(self, *names: str) -> None:
        """Stop watching `names` (an outage the test makes on purpose)."""
        self.wanted.difference_update(names)

    def resume(self, *names: str) -> None:
        self.wanted.update(names)

    async def _watch(self) -> None:
        while True:
            now = time.monotonic()
            for name in sorted(self.wanted):
                proc = self.system.processes.get(name)
                if proc is not None and proc.poll() is None:
                    if now - self._started_at.get(name, now) > 30:
                        self._failures[name] = 0  # it stayed up: forget the crash loop
                    continue
                if proc is not None:
                    self.system.processes.pop(name)
                    self.system.exits.append((name, proc.returncode, now))
                    self._failures[name] += 1
                    self._next_start[name] = now + min(8.0, 0.5 * 2 ** (self._failures[name] - 1))
                if now < self._next_start.get(name, 0.0):
                    continue
                self.system.spawn(name)
                self._started_at[name] = now
                self.restarts[name] += 1
            await asyncio.sleep(0.2)


def kill_9(system: FaultSystem, name: str) -> None:
    """SIGKILL one process; the supervisor (if it watches it) starts it again."""
    proc = system.processes.pop(name, None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


# --- a local HTTP server for `http` steps ----------------------------------------------------


class StepServer:
    """`GET /echo?i=N` answers `{"i": N}`; `GET /flaky?id=X` answers 503 the first time it
    sees X and 200 afterwards; every request is counted by path."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: Counter[str] = Counter()
        self.flaky_seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with server.lock:
                    server.hits[parts.path] += 1
                if parts.path == "/echo":
                    self._json(200, {"i": int(query.get("i", "0"))})
                elif parts.path == "/flaky":
                    with server.lock:
                        server.flaky_seen[query.get("id", "")] += 1
                        first = server.flaky_seen[query.get("id", "")] == 1
                    if first:
                        self._json(503, {"error": "try again"})
                    else:
                        self._json(200, {"ok": True})
                else:
                    self._json(404, {"error": "no such path"})

            def _json(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # executors open many connections at once

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # an executor killed mid-request leaves a broken pipe: expected

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StepServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- Kafka topics, read committed ------------------------------------------------------------


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="jobsprint-faults")
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described["partitions"])


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of `topic`, in offset order per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    partitions = await topic_partitions(bootstrap, topic)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            for tp, found in batch.items():
                records.extend(r for r in found if r.offset < ends[tp])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()


async def read_events(bootstrap: str, topic: str) -> list[Envelope[Payload]]:
    events = []
    for record in await read_topic(bootstrap, topic):
        with contextlib.suppress(UndecodableMessage):
            events.append(decode(record.value))
    return events


async def read_dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in await read_topic(bootstrap, topic)]


async def dead_letters_of(system: System) -> list[DeadLetter]:
    return await read_dead_letters(system.bootstrap, f"{system.topic_prefix}.deadletter")


async def last_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> offset after the last committed data record (what a caught-up
    projector stores as its checkpoint)."""
    found: dict[int, int] = {}
    for record in await read_topic(bootstrap, topic):
        found[record.partition] = max(found.get(record.partition, 0), record.offset + 1)
    return found


# --- audits ----------------------------------------------------------------------------------


@dataclass
class EventAudit:
    """What the events topic says about a set of executions."""

    executions: int = 0
    events: int = 0
    missing: list[str] = field(default_factory=list)  # no event at all
    no_request: list[str] = field(default_factory=list)  # events, but no ExecutionRequested
    not_finished: list[str] = field(default_factory=list)  # no terminal event
    duplicated_completions: list[tuple[str, str, int, int]] = field(default_factory=list)
    duplicated_starts: list[str] = field(default_factory=list)  # ExecutionStarted twice
    several_terminals: list[str] = field(default_factory=list)
    seq_gaps: list[str] = field(default_factory=list)  # an event missing in the middle
    seq_repeats: list[str] = field(default_factory=list)  # one seq twice
    after_terminal: list[str] = field(default_factory=list)  # anything after the end
    terminal: dict[str, Envelope[Payload]] = field(default_factory=dict)
    by_execution: dict[str, list[Envelope[Payload]]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Executions whose history is incomplete: no events, no request, or no end."""
        return len(
            set(self.missing) | set(self.no_request) | set(self.not_finished) | set(self.seq_gaps)
        )

    @property
    def duplicated(self) -> int:
        return (
            len(self.duplicated_completions)
            + len(self.duplicated_starts)
            + len(self.several_terminals)
            + len(self.seq_repeats)
        )

    def problems(self) -> dict[str, Any]:
        return {
            name: value[:10]
            for name, value in {
                "missing": self.missing,
                "no_request": self.no_request,
                "not_finished": self.not_finished,
                "duplicated_completions": self.duplicated_completions,
                "duplicated_starts": self.duplicated_starts,
                "several_terminals": self.several_terminals,
                "seq_gaps": self.seq_gaps,
                "seq_repeats": self.seq_repeats,
                "after_terminal": self.after_terminal,
            }.items()
            if value
        }


def audit_events(events: Iterable[Envelope[Payload]], execution_ids: Iterable[str]) -> EventAudit:
    wanted = set(execution_ids)
    audit = EventAudit(executions=len(wanted))
    by_execution: dict[str, list[Envelope[Payload]]] = defaultdict(list)
    for event in events:
        if event.execution_id in wanted:
            by_execution[event.execution_id].append(event)
    audit.by_execution = dict(by_execution)
    for execution_id in sorted(wanted):
        found = sorted(by_execution.get(execution_id, []), key=lambda e: e.seq)
        audit.events += len(found)
        if not found:
            audit.missing.append(execution_id)
            continue
        if not any(isinstance(e.data, ExecutionRequested) for e in found):
            audit.no_request.append(execution_id)
        seqs = [e.seq for e in found]
        if len(set(seqs)) != len(seqs):
            audit.seq_repeats.append(execution_id)
        if set(seqs) != set(range(1, max(seqs) + 1)):
            audit.seq_gaps.append(execution_id)
        completions = Counter(
            (e.data.step_id, e.data.attempt) for e in found if isinstance(e.data, StepCompleted)
        )
        for (step_id, attempt), count in completions.items():
            if count > 1:
                audit.duplicated_completions.append((execution_id, step_id, attempt, count))
        if sum(isinstance(e.data, ExecutionStarted) for e in found) > 1:
            audit.duplicated_starts.append(execution_id)
        ends = [e for e in found if isinstance(e.data, TERMINAL_EVENTS)]
        if not ends:
            audit.not_finished.append(execution_id)
            continue
        if len(ends) > 1:
            audit.several_terminals.append(execution_id)
        audit.terminal[execution_id] = ends[0]
        later = [
            e for e in found if e.seq > ends[0].seq and not isinstance(e.data, ExecutionDeleted)
        ]
        if later:
            audit.after_terminal.append(execution_id)
    return audit


def steps_started_after(events: list[Envelope[Payload]], seq: int) -> list[Envelope[Payload]]:
    return [e for e in events if isinstance(e.data, StepStarted) and e.seq > seq]


# --- the read model --------------------------------------------------------------------------


def read_model_statuses(database_url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "SELECT id, status, output, error, last_seq, started_at, created_at"
            " FROM executions WHERE id = ANY(%s)",
            (ids,),
        )
        return {
            row[0]: {
                "status": row[1],
                "output": row[2],
                "error": row[3],
                "last_seq": row[4],
                "started_at": row[5],
                "created_at": row[6],
            }
            for row in cur
        }


async def wait_terminal(
    database_url: str, ids: list[str], timeout_s: float, poll_s: float = 1.0, strict: bool = True
) -> dict[str, dict[str, Any]]:
    """The read-model rows of `ids` once all are terminal. After `timeout_s`: AssertionError
    when `strict`, else the rows as they are (the caller reports what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await asyncio.to_thread(read_model_statuses, database_url, ids)
        done = sum(1 for r in rows.values() if r["status"] in TERMINAL)
        if done == len(ids):
            return rows
        if time.monotonic() > deadline:
            if not strict:
                return rows
            statuses = Counter(r["status"] for r in rows.values())
            raise AssertionError(
                f"{len(ids) - done} of {len(ids)} executions not terminal after {timeout_s:.0f}s"
                f" (read model: {dict(statuses)}, not projected: {len(ids) - len(rows)})"
            )
        await asyncio.sleep(poll_s)


def not_terminal(rows: dict[str, dict[str, Any]], ids: list[str]) -> list[str]:
    return [e for e in ids if e not in rows or rows[e]["status"] not in TERMINAL]


def read_model_duplicates(database_url: str, ids: list[str]) -> dict[str, Any]:
    """Step completions the read model shows more than once: per (execution, step) more than
    one `Step … completed` log line, or a log line whose seq is above the execution's
    `last_seq` (applied out of band)."""
    with psycopg.connect(database_url) as conn:
        doubled = conn.execute(
            "SELECT execution_id, step_id, count(*) FROM execution_logs"
            " WHERE execution_id = ANY(%s) AND message LIKE 'Step %% completed'"
            " GROUP BY 1, 2 HAVING count(*) > 1",
            (ids,),
        ).fetchall()
        beyond = conn.execute(
            "SELECT l.execution_id, l.seq FROM execution_logs l JOIN executions e"
            " ON e.id = l.execution_id WHERE l.execution_id = ANY(%s) AND l.seq > e.last_seq",
            (ids,),
        ).fetchall()
        completed_without_log = conn.execute(
            "SELECT s.execution_id, s.step_id FROM execution_steps s"
            " WHERE s.execution_id = ANY(%s) AND s.status = 'success' AND s.reused_from IS NULL"
            " AND (SELECT count(*) FROM execution_logs l WHERE l.execution_id = s.execution_id"
            "      AND l.step_id = s.step_id AND l.message LIKE 'Step %% completed') <> 1",
            (ids,),
        ).fetchall()
    return {
        "doubled_completion_logs": doubled[:10],
        "logs_beyond_last_seq": beyond[:10],
        "completed_steps_without_one_log": completed_without_log[:10],
        "count": len(doubled) + len(beyond) + len(completed_without_log),
    }


# --- load ------------------------------------------------------------------------------------


async def submit_many(
    client: httpx.AsyncClient,
    requests: list[tuple[str, dict[str, Any]]],
    concurrency: int = 32,
    retried: Counter[str] | None = None,
) -> list[httpx.Response]:
    """POST each (workflow id, body) to execute; answers in request order. Each request
    carries its own Idempotency-Key, so a connection lost on the way is retried safely (as
    a careful client would); `retried` counts those retries."""
    gate = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str, body: dict[str, Any]) -> httpx.Response:
        key = uuid.uuid4().hex
        async with gate:
            for attempt in range(5):
                try:
                    return await client.post(
                        f"/v1/workflows/{workflow_id}/execute",
                        json=body,
                        headers={"Idempotency-Key": key},
                    )
                except httpx.TransportError as exc:
                    if retried is not None:
                        retried[type(exc).__name__] += 1
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(w, b) for w, b in requests)))


async def create_workflow(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await client.post(
        "/v1/workflows", json={"trigger": {"type": "manual"}, **definition}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


@contextlib.asynccontextmanager
async def gateway_client(system: System, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=system.gateway_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        # idle connections are dropped before the server's 5 s keep-alive closes them
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0),
    ) as client:
        yield client


def jitter(low: float, high: float) -> float:
    return random.uniform(low, high)


# --- figures for docs/reliability.md ---------------------------------------------------------


def report_path() -> Path:
    return Path(os.environ.get("JOBSPRINT_FAULTS_REPORT", "/tmp/jobsprint-faults-figures.jsonl"))


def write_figures(scenario: str, figures: dict[str, Any]) -> None:
    """One JSON line per scenario run, also printed (pytest -s shows it)."""
    line = json.dumps({"scenario": scenario, **figures}, default=str, sort_keys=True)
    print(f"\nFIGURES {line}")
    with report_path().open("a") as out:
        out.write(line + "\n")


# Three steps with a short wait: output = input.i + 1. Used wherever a fault must hit
# executions that are mid-run.
PLUS_ONE: dict[str, Any] = {
    "name": "Plus one",
    "steps": [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": "{{ input.i }}"}},
        {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 0.2}},
        {
            "id": "b",
            "name": "B",
            "type": "transform",
            "params": {"output": "{{ steps.a.output + 1 }}"},
        },
    ],
}
