"""Where the time goes: py-spy samples of the running services, summarised (pure parsing
of py-spy's `raw` output, i.e. collapsed stacks `frame;frame;… count`)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# (category, substrings of a frame's file path / function) — first match wins, leaf first
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Kafka client (aiokafka)", ("aiokafka/", "kafka/")),
    ("Postgres client (psycopg, pool)", ("psycopg/", "psycopg_pool/")),
    ("pydantic (validation, serialisation)", ("pydantic/", "pydantic_core/", "pydantic_settings/")),
    ("JSON + envelope codec (orjson)", ("jobsprint/events/codec.py", "orjson")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools/", "h11/")),
    ("web framework (FastAPI, Starlette)", ("fastapi/", "starlette/", "anyio/")),
    ("HTTP client (httpx)", ("httpx/", "httpcore/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging", ("/logging/", "jobsprint/runtime/logs.py")),
    ("workflow templates and steps", ("jobsprint/workflows/",)),
    ("chDB / ClickHouse", ("chdb/", "chdb_core")),
    ("socket writes (asyncio streams; loopback TCP in the kernel)", ("asyncio/streams.py",)),
    ("event loop (asyncio, uvloop)", ("/asyncio/", "uvloop/", "runners.py")),
    ("Jobsprint code", ("jobsprint/",)),
)


def categorize(frame: str) -> str | None:
    for name, needles in CATEGORIES:
        if any(n in frame for n in needles):
            return name
    return None


def short(frame: str) -> str:
    """A frame with its file path cut after site-packages/, src/ or the Python library."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        at = frame.find(marker)
        if at >= 0:
            head = frame[: frame.find("(") + 1] if "(" in frame else ""
            return head + frame[at + len(marker) :]
    return frame


def hot_match(spec: str, frame: str) -> bool:
    """`spec` is "function path/fragment": the frame runs that function in such a file."""
    function, _, where = spec.partition(" ")
    name = frame.split(" (", 1)[0]
    return (name == function or name.endswith("." + function)) and where in frame


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """[(frames root→leaf, samples)] from py-spy's raw format."""
    stacks = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        stacks.append((frames, int(count)))
    return stacks


def summarize_profile(
    stacks: list[tuple[list[str], int]], hot: Iterable[str] = (), top: int = 12
) -> dict[str, Any]:
    """Self time by category (the leaf-most frame that belongs to a known library decides),
    inclusive time by category (a frame of it anywhere in the stack: e.g. the Kafka client
    including the socket writes it makes), inclusive time of the `hot` functions (see
    `hot_match`), and the heaviest leaf frames."""
    total = sum(count for _, count in stacks)
    by_category: Counter[str] = Counter()
    touching: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    hot = tuple(hot)
    for frames, count in stacks:
        category = "other (interpreter, stdlib)"
        for frame in reversed(frames):
            found = categorize(frame)
            if found is not None:
                category = found
                break
        by_category[category] += count
        for name in {c for c in map(categorize, frames) if c is not None}:
            touching[name] += count
        if frames:
            leaves[frames[-1]] += count
        for name in hot:
            if any(hot_match(name, frame) for frame in frames):
                inclusive[name] += count

    def pct(n: int) -> float:
        return round(100.0 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "self_pct_by_category": {k: pct(v) for k, v in by_category.most_common()},
        "inclusive_pct_by_category": {k: pct(v) for k, v in touching.most_common()},
        "inclusive_pct": {k: pct(inclusive[k]) for k in hot},
        "top_leaf_frames": [[short(frame), pct(n)] for frame, n in leaves.most_common(top)],
    }


HOT_FUNCTIONS = {
    "api-gateway": (
        "execute_workflow gateway/routes/workflows.py",
        "submit gateway/intake.py",
        "claim_request gateway/repository.py",
        "mark_published gateway/repository.py",
        "workflow gateway/repository.py",
        "send gateway/commands.py",
        "send_and_wait aiokafka/",
        "authenticate gateway/auth.py",
        "model_body gateway/routes/common.py",
        "make events/envelope.py",
        "encode events/codec.py",
        "wait_for gateway/waiters.py",
        "list_executions gateway/routes/executions.py",
        "get_execution gateway/routes/executions.py",
        "__call__ gateway/telemetry.py",
        "__call__ gateway/limits.py",
    ),
    "executor": (
        "handle executor/partition.py",
        "decode events/codec.py",
        "run executor/runner.py",
        "run_step executor/steps.py",
        "emit executor/outbox.py",
        "make events/envelope.py",
        "encode events/codec.py",
        "flush executor/partition.py",
        "encode executor/state.py",
        "getmany aiokafka/",
        "_report_lag executor/worker.py",
    ),
    "projector": (
        "apply_batch projector/batch.py",
        "decode_records projector/batch.py",
        "decode events/codec.py",
        "_apply_together projector/batch.py",
        "lock_and_load projector/store.py",
        "write_changes projector/store.py",
        "getmany aiokafka/",
        "commit_to_kafka projector/consumer.py",
    ),
    "metrics": (
        "decode events/codec.py",
        "getmany aiokafka/",
    ),
}


def summarize_files(folder: Path, names: Iterable[str]) -> dict[str, Any]:
    """Summaries of `<folder>/<name>.txt` raw py-spy outputs, by process name."""
    out = {}
    for name in names:
        path = folder / f"{name}.txt"
        if path.exists():
            kind = name.split("-")[0] if name.startswith("executor") else name
            stacks = parse_collapsed(path.read_text().splitlines())
            out[name] = summarize_profile(stacks, HOT_FUNCTIONS.get(kind, ()))
    return out


def pyspy_available() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    for candidate in (Path(sys.executable).parent / "py-spy", Path.home() / ".local/bin/py-spy"):
        if candidate.exists():
            return str(candidate)
    return None


async def record(
    pid: int, seconds: int, out: Path, rate: int = 100
) -> asyncio.subprocess.Process | None:
    """Start `py-spy record` on `pid` (non-blocking sampling, so the service is never paused)
    writing collapsed stacks to `out`; the caller awaits the process."""
    exe = pyspy_available()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(rate),
        "--nonblocking",
        "--gil",  # only samples holding the GIL: CPU time, not uvloop waiting in epoll
        "--full-filenames",
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
