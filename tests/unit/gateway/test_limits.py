"""JSON depth, the token-bucket rate limiter and the body-size middleware (no server)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobsprint.gateway.errors import InvalidJson, RateLimited
from jobsprint.gateway.limits import (
    BodyLimitMiddleware,
    RateLimiter,
    find_problem,
    parse_json,
)

pytestmark = pytest.mark.unit


def nested(depth: int) -> Any:
    doc: Any = 1
    for i in range(depth):
        doc = {"k": doc} if i % 2 else [doc]
    return doc


def deep(value: Any) -> bool:
    problem = find_problem(value)
    return problem is not None and problem[1] == "deep"


def test_depth_counts_containers() -> None:
    assert not deep(1)
    assert not deep({})
    assert not deep(nested(32))
    assert deep(nested(33))
    assert not deep({"a": [1, {"b": 2}], "c": nested(31)})
    assert deep([1, 2, {"a": nested(32)}])
    assert find_problem({"a": [{"b": "x\x00"}]}) == ("a[0].b", "nul")


def test_a_problem_is_named_by_its_path() -> None:
    assert find_problem({"a": {"b": [1, {"c\x00": 2}]}}) == ("a.b[1].c\x00", "nul")
    assert find_problem([["x"], {"k": ["\x00"]}]) == ("[1].k[0]", "nul")
    assert find_problem("\x00") == ("", "nul")
    assert find_problem({"a": {"k": nested(32)}}) == ("a.k" + ".k[0]" * 15, "deep")
    assert find_problem({"a": {"k": nested(30)}}) is None
    assert find_problem({"a": "fine", "b": [1, 2.5, None, True]}) is None
    with pytest.raises(InvalidJson) as refused:
        parse_json(orjson.dumps({"inputData": {"a": nested(40)}}))
    assert refused.value.details == [
        {"field": "inputData.a.k…", "message": "nests deeper than 32 levels"}
    ]
    with pytest.raises(InvalidJson) as refused:
        parse_json(b'{"a": {"b\\u0000": 1}}')
    assert refused.value.message == "a.b\\u0000: NUL characters are not accepted"


def test_parse_json_refuses_deep_and_broken_documents() -> None:
    assert parse_json(b"") is None
    assert parse_json(b'{"a": [1]}') == {"a": [1]}
    assert parse_json(orjson.dumps(nested(32))) == nested(32)
    with pytest.raises(InvalidJson, match="deeper than 32"):
        parse_json(orjson.dumps(nested(33)))
    with pytest.raises(InvalidJson, match="deeper than 32"):
        parse_json(b"[" * 5000 + b"]" * 5000)  # past the parser's own recursion limit
    with pytest.raises(InvalidJson, match="not valid JSON"):
        parse_json(b'{"a": ')


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_a_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.wait_time("t") for _ in range(3)] == [0, 0, 0]
    assert limiter.wait_time("t") == pytest.approx(0.5)
    with pytest.raises(RateLimited) as refused:
        limiter.check("t")
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.status == 429
    assert limiter.wait_time("other") == 0  # buckets are per key
    clock.now += 0.5
    assert limiter.wait_time("t") == 0
    assert limiter.wait_time("t") > 0
    clock.now += 60  # refills up to the burst, not beyond
    assert [limiter.wait_time("t") for _ in range(4)][-1] > 0


def test_the_limiter_forgets_full_buckets_when_it_has_too_many() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_keys=10)
    for i in range(10):
        limiter.wait_time(f"k{i}")
    clock.now += 5
    assert limiter.wait_time("new") == 0
    assert len(limiter._buckets) == 1


async def run_middleware(
    chunks: list[bytes], headers: list[tuple[bytes, bytes]], limit: int
) -> tuple[list[dict[str, Any]], bytes | None]:
    """(messages sent, body the app saw or None when it was not called)."""
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": headers}
    await BodyLimitMiddleware(app, limit)(scope, receive, send)
    return sent, seen[0] if seen else None


async def test_a_declared_oversized_body_is_refused_before_reading() -> None:
    sent, body = await run_middleware([b"x" * 10], [(b"content-length", b"5000")], 100)
    assert body is None
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


async def test_an_undeclared_oversized_body_is_refused_while_counting() -> None:
    sent, body = await run_middleware([b"x" * 60, b"x" * 60], [], 100)
    assert body is None
    assert sent[0]["status"] == 413


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    sent, body = await run_middleware([b"x" * 50, b"y" * 50], [], 100)
    assert body == b"x" * 50 + b"y" * 50
    assert sent[0]["status"] == 200
