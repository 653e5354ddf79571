"""Request limits: body size (pure ASGI middleware), JSON depth, per-token rate limit."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from jobsprint.gateway.errors import InvalidJson, PayloadTooLarge, RateLimited, error_body

MAX_JSON_DEPTH = 32

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- JSON ------------------------------------------------------------------------------------


# where a node sits: None for the root, else (parent's place, "." and a key or "[" and an index)
_Place = tuple[Any, str, Any] | None


def find_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """(path, "deep" | "nul") of the first container nested deeper than `limit` or the first
    string holding a NUL character (Postgres cannot store one). Iterative, so a hostile
    document cannot exhaust the Python stack; the path is spelled out only for a problem."""
    stack: list[tuple[Any, int, _Place]] = [(value, 1, None)]
    while stack:
        node, depth, place = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return _spelled(place), "nul"
            continue
        if isinstance(node, dict):
            if depth > limit:
                return _spelled(place), "deep"
            for key, child in node.items():
                if "\x00" in key:
                    return _spelled((place, ".", key)), "nul"
                stack.append((child, depth + 1, (place, ".", key)))
        elif isinstance(node, list):
            if depth > limit:
                return _spelled(place), "deep"
            for index, child in enumerate(node):
                stack.append((child, depth + 1, (place, "[", index)))
    return None


def _spelled(place: _Place) -> str:
    """`a.b[0].c`: keys joined by dots, indexes in brackets; "" for the root."""
    steps: list[tuple[str, Any]] = []
    while place is not None:
        place, kind, step = place
        steps.append((kind, step))
    path = ""
    for kind, step in reversed(steps):
        if kind == "[":
            path += f"[{step}]"
        else:
            path = f"{path}.{step}" if path else str(step)
    return path


def _short(path: str) -> str:
    """The first levels of a path: enough to name the field, not 33 levels of it."""
    parts = path.replace("\x00", "\\u0000").replace("[", ".[").split(".")
    head = ".".join(parts[:3]).replace(".[", "[")
    return head + ("…" if len(parts) > 3 else "") if head else "(body)"


def parse_json(raw: bytes, *, limit: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body; an empty body is `None`. InvalidJson when it is not JSON, nests
    deeper than `limit` or holds a NUL character, naming where."""
    if not raw.strip():
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise _too_deep(limit, "(body)") from None
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    problem = find_problem(doc, limit)
    if problem is not None:
        path, kind = problem
        field = _short(path)
        if kind == "deep":
            raise _too_deep(limit, field)
        message = "NUL characters are not accepted"
        raise InvalidJson(f"{field}: {message}", [{"field": field, "message": message}])
    return doc


def _too_deep(limit: int, field: str) -> InvalidJson:
    message = f"nests deeper than {limit} levels"
    return InvalidJson(f"{field}: {message}", [{"field": field, "message": message}])


# --- rate limit ------------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by caller (token id, webhook), refilled at `rate` per second up
    to `burst`. In process: each gateway replica limits on its own."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def wait_time(self, key: str) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """RateLimited (429 with Retry-After) when `key` has no token left."""
        wait = self.wait_time(key)
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))

    def _prune(self, now: float) -> None:
        # a bucket that has refilled completely carries no information
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


# --- body size -------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Answers 413 for bodies over `max_bytes` before the application sees them: at once
    when Content-Length says so, otherwise while counting the received chunks (chunked
    uploads). The accepted body (bounded by `max_bytes`) is replayed to the application."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        # no `Connection: close`: closing with unread upload bytes makes the kernel reset
        # the connection, and the client would lose this answer; the server discards the
        # rest of the upload instead
        error = PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
        body = error_body(error.code, error.message, {"maxBytes": self.max_bytes})
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
