"""An open-loop load generator with a small, hand-rolled HTTP/1.1 keep-alive client.

The generator shares the box's two cores with the system under test, so it stays cheap: one
asyncio (uvloop) process, raw asyncio streams, no HTTP library (httpx costs several times
the CPU per request). Open loop: request i is due at t0 + i/rate whatever happened to the
earlier ones; its latency counts from that due time, so a stall of the server (or of the
generator) shows up as latency instead of silently lowering the offered rate (no
coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson


class HttpError(Exception):
    pass


# uvicorn closes a keep-alive connection after 5 s idle: never reuse one idle that long
MAX_IDLE_S = 3.0


class _Connection:
    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Keep-alive HTTP/1.1 to one host: a pool of up to `max_connections` sockets, each
    carrying one request at a time. Responses must carry Content-Length (uvicorn's do)."""

    def __init__(self, base_url: str, *, max_connections: int = 256, timeout_s: float = 30.0):
        rest = base_url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.partition(":")
        self.host = host
        self.port = int(port or 80)
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._host_header = f"Host: {host}:{self.port}\r\n".encode()

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if time.monotonic() - conn.idle_since < MAX_IDLE_S:
                    conn.reused = True
                    return conn
                conn.close()
                self._open -= 1
            if self._open < self.max_connections:
                self._open += 1
                try:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
                return _Connection(reader, writer)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: bytes = b"",
        timeout_s: float | None = None,
    ) -> tuple[int, bytes]:
        """(status, body). `headers` are raw `Name: value\\r\\n` lines."""
        head = (
            f"{method} {path} HTTP/1.1\r\n".encode()
            + self._host_header
            + headers
            + (
                b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
                if body
                else b""
            )
            + b"\r\n"
        )
        async with asyncio.timeout(timeout_s or self.timeout_s):
            for attempt in (1, 2):
                conn = await self._acquire()
                try:
                    return await self._exchange(conn, head + body if body else head)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    # a kept-alive socket the server closed meanwhile: once more, on a new one
                    stale = conn.reused and (
                        not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                    )
                    if attempt == 2 or not stale:
                        raise
        raise AssertionError("unreachable")

    async def _exchange(self, conn: _Connection, request: bytes) -> tuple[int, bytes]:
        reusable = False
        try:
            conn.writer.write(request)
            raw = await conn.reader.readuntil(b"\r\n\r\n")
            status = int(raw[9:12])
            lower = raw.lower()
            at = lower.find(b"content-length:")
            if at < 0:
                raise HttpError("response without Content-Length")
            length = int(lower[at + 15 : lower.index(b"\r\n", at)])
            payload = await conn.reader.readexactly(length) if length else b""
            reusable = b"connection: close" not in lower
            return status, payload
        finally:
            self._release(conn, reusable)

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


@dataclass(slots=True)
class Outcome:
    """One request of an open-loop run. Times are `time.monotonic()` seconds, except
    `due_wall` (`time.time()`), kept to compare with event times written by the system."""

    index: int
    due: float
    due_wall: float
    sent: float = 0.0
    done: float = 0.0
    status: int = 0
    error: str | None = None
    result: Any = None  # what the request function extracted (e.g. the execution id)

    @property
    def latency_ms(self) -> float:
        """From the due time (includes any wait for a free connection or a late generator)."""
        return (self.done - self.due) * 1000

    @property
    def service_ms(self) -> float:
        return (self.done - self.sent) * 1000


RequestFn = Callable[[Outcome], Awaitable[None]]


@dataclass
class OpenLoopRun:
    rate: float
    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    started_wall: float = 0.0
    finished_offering: float = 0.0
    late_max_ms: float = 0.0  # worst lateness of the generator itself vs. the schedule

    @property
    def offered(self) -> int:
        return len(self.outcomes)

    @property
    def achieved_rate(self) -> float:
        """Rate the generator actually issued requests at."""
        span = self.finished_offering - self.started
        return self.offered / span if span > 0 else 0.0

    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is None and o.done]

    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def error_kinds(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for o in self.errors():
            key = (o.error or "")[:60]
            kinds[key] = kinds.get(key, 0) + 1
        return kinds


async def open_loop(
    rate: float,
    duration_s: float,
    request: RequestFn,
    *,
    grace_s: float = 30.0,
    start_delay_s: float = 0.05,
) -> OpenLoopRun:
    """Issue `request` at `rate` per second for `duration_s`, each at its due time, then
    wait up to `grace_s` for the stragglers (those still running are cut and recorded as
    errors)."""
    loop = asyncio.get_running_loop()
    run = OpenLoopRun(rate, duration_s)
    total = int(rate * duration_s)
    run.started = loop.time() + start_delay_s
    run.started_wall = time.time() + start_delay_s
    tasks: set[asyncio.Task[None]] = set()

    async def one(outcome: Outcome) -> None:
        outcome.sent = time.monotonic()
        try:
            await request(outcome)
        except TimeoutError:
            outcome.error = "timeout"
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.done = time.monotonic()

    interval = 1.0 / rate
    # loop.time() and time.monotonic() are the same clock on uvloop and asyncio
    for index in itertools.count():
        if index >= total:
            break
        due = run.started + index * interval
        delay = due - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        else:
            run.late_max_ms = max(run.late_max_ms, -delay * 1000)
        outcome = Outcome(index, due, run.started_wall + index * interval)
        run.outcomes.append(outcome)
        task = loop.create_task(one(outcome))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    run.finished_offering = run.started + total * interval
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        for outcome in run.outcomes:
            if not outcome.done:
                outcome.error = "cut after the run"
    return run


def json_of(payload: bytes) -> Any:
    return orjson.loads(payload)
