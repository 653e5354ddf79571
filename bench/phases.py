"""The benchmark's phases against the running local stack. Each phase returns a plain dict
that lands in bench/results/latest.json."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import profile as spy
from bench.bulk import OUT, REPO, BulkTarget, ensure_bulk, say, with_database
from bench.loadgen import HttpClient, OpenLoopRun, Outcome, open_loop
from bench.probes import (
    CpuWindow,
    LagSampler,
    Notifications,
    ProcessSampler,
    finished_times,
    infra_pids,
    scrape_counter,
)
from bench.stats import judge_step, per_second, summarize

WORKFLOW = {
    "name": "Bench two-step transform",
    "description": "Shapes the input, then builds a reply from the first step's output",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "shape",
            "name": "Shape input",
            "type": "transform",
            "params": {"output": {"n": "{{ input.n }}", "email": "{{ input.email }}"}},
        },
        {
            "id": "double",
            "name": "Build reply",
            "type": "transform",
            "params": {"output": {"d": "{{ steps.shape.output.n * 2 }}"}},
        },
    ],
}
EVENTS_PER_EXECUTION = 13  # what the executor appends for WORKFLOW (see bench/eventgen.py)


@dataclass
class Stack:
    """The running stack and the probes on it."""

    gateway_url: str
    database_url: str
    bootstrap: str
    run_dir: Path
    projector_ops: str
    database: str = "jobsprint"
    tokens: list[bytes] = field(default_factory=list)  # ready-made Authorization headers
    client: HttpClient | None = None
    notes: Notifications | None = None
    lag: LagSampler | None = None
    procs: ProcessSampler | None = None

    def auth(self, index: int) -> bytes:
        return self.tokens[index % len(self.tokens)]

    async def create_workflow(self, name: str) -> str:
        assert self.client is not None
        body = orjson.dumps({**WORKFLOW, "name": f"{WORKFLOW['name']} ({name})"})
        status, payload = await self.client.request(
            "POST", "/v1/workflows", body=body, headers=self.auth(0)
        )
        if status != 201:
            raise RuntimeError(f"creating the bench workflow answered {status}: {payload[:300]!r}")
        return str(orjson.loads(payload)["data"]["id"])


async def make_tokens(database_url: str, workspace: str, count: int) -> tuple[list[bytes], str]:
    """`count` tokens of one workspace (the gateway limits each token to 1,000 requests/s,
    as it would limit one client: the generator spreads requests over several, like several
    clients), made with the gateway's admin code, as `jobsprint admin token create` does."""
    from jobsprint.gateway.cli import create_token

    headers = []
    workspace_id = ""
    for i in range(count):
        workspace_id, _, token = await create_token(database_url, workspace, None, f"bench-{i}")
        headers.append(f"Authorization: Bearer {token}\r\n".encode())
    return headers, workspace_id


def _body(index: int, wait: bool = False, timeout: int = 60) -> bytes:
    doc: dict[str, Any] = {"inputData": {"n": index, "email": f"user{index % 1000}@example.com"}}
    if wait:
        doc["options"] = {"waitForCompletion": True, "timeout": timeout}
    return orjson.dumps(doc)


def submitter(stack: Stack, workflow_id: str, *, wait: bool = False):  # type: ignore[no-untyped-def]
    """A request function: POST execute; records the execution id (and, when waiting,
    whether it ended in success)."""
    assert stack.client is not None
    client = stack.client
    path = f"/v1/workflows/{workflow_id}/execute"
    expected = 200 if wait else 202

    async def request(outcome: Outcome) -> None:
        status, payload = await client.request(
            "POST",
            path,
            body=_body(outcome.index, wait),
            headers=stack.auth(outcome.index),
            timeout_s=70 if wait else 30,
        )
        outcome.status = status
        if status != expected:
            raise RuntimeError(f"HTTP {status}: {payload[:120]!r}")
        data = orjson.loads(payload)["data"]
        outcome.result = data["executionId"]
        if wait and data.get("status") != "success":
            raise RuntimeError(f"finished {data.get('status')}")

    return request


# --- analysis of one open-loop run ------------------------------------------------------------


def completion_times(stack: Stack, run: OpenLoopRun) -> dict[str, float]:
    """execution id -> monotonic time its success became visible in the read model."""
    assert stack.notes is not None
    seen = stack.notes.seen
    out = {}
    for o in run.outcomes:
        if o.result is not None and o.result in seen and seen[o.result][2] == "success":
            out[o.result] = seen[o.result][1]
    return out


async def wait_drained(stack: Stack, run: OpenLoopRun, timeout_s: float) -> float:
    """Until every accepted execution of `run` is visible as finished and the executor and
    projector groups have no backlog (or the timeout): the next step must not inherit this
    one's queue. Returns the seconds it took."""
    assert stack.notes is not None and stack.lag is not None
    began = time.monotonic()
    ids = [o.result for o in run.outcomes if o.result is not None]
    deadline = began + timeout_s
    while time.monotonic() < deadline:
        if all(i in stack.notes.seen for i in ids):
            lags = await stack.lag.sample()
            if all(lag < 200 for group, lag in lags.items() if not group.endswith(".metrics")):
                break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - began, 1)


def analyse(stack: Stack, run: OpenLoopRun, warmup_s: float, max_p99_ms: float) -> dict[str, Any]:
    assert stack.lag is not None
    done = completion_times(stack, run)
    start = run.started + warmup_s
    end = run.finished_offering
    window = max(end - start, 1e-9)
    in_window = [t for t in done.values() if start <= t < end]
    e2e = [
        (done[o.result] - o.due) * 1000 for o in run.outcomes if o.result in done and o.due >= start
    ]
    accepted = [o.latency_ms for o in run.ok() if o.due >= start]
    completion_rate = len(in_window) / window
    trends = {
        group: stack.lag.trend(
            group, start, end, run.rate * (EVENTS_PER_EXECUTION if "executor" not in group else 1)
        )
        for group in stack.lag.groups
    }
    lag_growing = any(t["growing"] for g, t in trends.items() if not g.endswith(".metrics"))
    e2e_summary = summarize(e2e)
    verdict = judge_step(
        offered_rate=run.rate,
        achieved_rate=run.achieved_rate,
        completion_rate=completion_rate,
        errors=len(run.errors()),
        requests=run.offered,
        lag_growing=lag_growing,
        p99_ms=e2e_summary["p99"],  # type: ignore[arg-type]
        max_p99_ms=max_p99_ms,
    )
    return {
        "rate": run.rate,
        "seconds": run.duration_s,
        "offered": run.offered,
        "achieved_rate": round(run.achieved_rate, 1),
        "generator_late_max_ms": round(run.late_max_ms, 1),
        "errors": len(run.errors()),
        "error_kinds": run.error_kinds(),
        "completed_per_s": round(completion_rate, 1),
        "completed_total": len(done),
        "accept_ms": summarize(accepted),
        "e2e_ms": e2e_summary,
        "lag": trends,
        "lag_growing": lag_growing,
        "sustainable": verdict.sustainable,
        "why_not": list(verdict.reasons),
    }


# --- phase 1: throughput ------------------------------------------------------------------------


async def throughput(stack: Stack, args: Any) -> dict[str, Any]:
    """Step the offered rate up until the system stops keeping up, then hold the best
    sustained rate for `args.hold` seconds (and profile the services at that rate)."""
    steps: list[dict[str, Any]] = []
    best = 0.0
    workflow_id = await stack.create_workflow("throughput")
    assert stack.procs is not None
    say("idle baseline: the stack's CPU for 15 s without load …")
    idle_window = CpuWindow(stack.procs, infra_pids(stack.run_dir, stack.database)).open()
    await asyncio.sleep(15)
    idle = idle_window.close()
    rates = [float(r) for r in args.steps.split(",")] if not args.rate else []

    async def step(rate: float) -> bool:
        say(f"throughput step {rate:.0f}/s for {args.step_seconds} s …")
        run = await open_loop(rate, args.step_seconds, submitter(stack, workflow_id))
        drained_s = await wait_drained(stack, run, args.drain_timeout)
        result = analyse(stack, run, warmup_s=5, max_p99_ms=args.max_e2e_p99_ms)
        result["drained_after_s"] = drained_s
        steps.append(result)
        verdict = (
            "ok" if result["sustainable"] else "NOT sustained: " + "; ".join(result["why_not"])
        )
        say(
            f"  offered {result['achieved_rate']}/s, completed {result['completed_per_s']}/s,"
            f" e2e p50/p99 {result['e2e_ms']['p50']}/{result['e2e_ms']['p99']} ms,"
            f" errors {result['errors']}, lag growing {result['lag_growing']} -> {verdict}"
        )
        return bool(result["sustainable"])

    failed = None
    for rate in rates:
        if not await step(rate):
            failed = rate
            break
        best = rate
    # then bisect between the best sustained step (or nothing) and the first miss, so the
    # figure is finer than the ladder and a busy box still yields one
    low, high = best, failed
    for _ in range(args.bisect if high is not None else 0):
        assert high is not None
        middle = round((low + high) / 2 / 25) * 25 if low > 0 else round(high / 2 / 25) * 25
        if middle <= low or middle >= high or middle <= 0:
            break
        if await step(middle):
            low = best = middle
        else:
            high = middle
    hold_rate = float(args.rate) if args.rate else best
    if hold_rate <= 0:
        hold_rate = float(rates[0]) / 2 if rates else 100.0
        say(f"no step was sustained; holding {hold_rate:.0f}/s instead")
    out: dict[str, Any] = {"steps": steps, "best_step_rate": best, "idle_cpu": idle}
    say(f"throughput hold at {hold_rate:.0f}/s for {args.hold} s …")
    assert stack.procs is not None
    cpu = CpuWindow(stack.procs, infra_pids(stack.run_dir, stack.database)).open()
    counter_before = await scrape_counter(stack.projector_ops, "jobsprint_projector_events_total")
    t_counter_before = time.monotonic()
    run = await open_loop(hold_rate, args.hold, submitter(stack, workflow_id))
    counter_after = await scrape_counter(stack.projector_ops, "jobsprint_projector_events_total")
    t_counter_after = time.monotonic()
    cpu_usage = cpu.close()
    await wait_drained(stack, run, 30)
    hold = analyse(stack, run, warmup_s=10, max_p99_ms=args.max_e2e_p99_ms)
    done = completion_times(stack, run)
    hold["completed_per_second_series"] = per_second(
        done.values(), run.started, run.finished_offering
    )
    hold["cpu"] = cpu_usage
    hold["cpu_ms_per_execution"] = cpu_per_execution(cpu_usage, hold["completed_per_s"])
    hold["capacity_estimate_per_s"] = capacity_estimate(hold["cpu_ms_per_execution"])
    hold["marginal_cpu_ms_per_execution"] = marginal_cpu(cpu_usage, idle, hold["completed_per_s"])
    hold["capacity_marginal_estimate_per_s"] = capacity_from_marginal(
        hold["marginal_cpu_ms_per_execution"], idle
    )
    if counter_before is not None and counter_after is not None:
        hold["projector_events_per_s"] = round(
            (counter_after - counter_before) / (t_counter_after - t_counter_before), 1
        )
    assert stack.lag is not None
    hold["events_topic_offsets_per_s"] = _round(
        stack.lag.topic_rate(f"{args.topic_prefix}.events", run.started + 10, run.finished_offering)
    )
    hold["read_model_success_rows"] = await _count_success(stack.database_url, workflow_id)
    out["hold"] = hold
    say(
        f"  hold: completed {hold['completed_per_s']}/s, e2e p99 {hold['e2e_ms']['p99']} ms,"
        f" lag growing {hold['lag_growing']}, events/s {hold.get('projector_events_per_s')}"
    )
    if args.profile_seconds > 0:
        out["profile"] = await profile_at(stack, hold_rate, workflow_id, args)
    out["hold_rate"] = hold_rate
    return out


def cpu_per_execution(usage: dict[str, Any], per_s: float) -> dict[str, float]:
    """CPU milliseconds each process spends per completed execution."""
    if per_s <= 0:
        return {}
    out = {
        name: round(cores * 1000 / per_s, 3)
        for name, cores in {**usage["services_cores"], **usage.get("infra_cores", {})}.items()
    }
    out["load generator"] = round(usage["loadgen_cores"] * 1000 / per_s, 3)
    out["whole machine"] = round(usage["machine_busy_cores"] * 1000 / per_s, 3)
    return out


def capacity_estimate(per_execution: dict[str, float], cores: int | None = None) -> float | None:
    """Executions/s the stack could complete if it had every core of the box to itself:
    cores / (CPU ms its own processes — services, Kafka, its Postgres backends, the load
    generator — spend per execution). An estimate for a shared box, not a measurement."""
    ours = sum(v for k, v in per_execution.items() if k != "whole machine")
    if ours <= 0:
        return None
    return round((cores or os.cpu_count() or 1) * 1000 / ours, 1)


def _ours(usage: dict[str, Any]) -> dict[str, float]:
    return {**usage["services_cores"], **usage.get("infra_cores", {})}


def marginal_cpu(usage: dict[str, Any], idle: dict[str, Any], per_s: float) -> dict[str, float]:
    """CPU ms per execution above what each process burns with no load at all (poll loops,
    heartbeats, and on a shared broker other tenants' traffic)."""
    if per_s <= 0:
        return {}
    base = _ours(idle)
    return {
        name: round(max(0.0, cores - base.get(name, 0.0)) * 1000 / per_s, 3)
        for name, cores in _ours(usage).items()
    }


def capacity_from_marginal(marginal: dict[str, float], idle: dict[str, Any]) -> float | None:
    """Executions/s the cores left after the idle baseline could complete at the marginal
    cost: an estimate for an otherwise idle box (batching gets cheaper with load, so it is
    conservative)."""
    per_execution = sum(marginal.values())
    if per_execution <= 0:
        return None
    spare = (os.cpu_count() or 1) - sum(_ours(idle).values())
    return round(spare * 1000 / per_execution, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def _count_success(database_url: str, workflow_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM executions WHERE workflow_id = %s AND status = 'success'",
            (workflow_id,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def profile_at(stack: Stack, rate: float, workflow_id: str, args: Any) -> dict[str, Any]:
    """py-spy on the gateway, one executor, the projector and metrics while load runs at
    `rate`; raw stacks go to bench/out/profiles/, summaries into the result."""
    from bench.probes import service_pids

    pids = service_pids(stack.run_dir)
    wanted = [n for n in ("api-gateway", "executor-1", "projector", "metrics") if n in pids]
    if spy.pyspy_available() is None:
        return {"skipped": "py-spy is not installed"}
    say(f"profiling {', '.join(wanted)} for {args.profile_seconds} s at {rate:.0f}/s …")
    folder = OUT / "profiles"
    assert stack.procs is not None
    cpu = CpuWindow(stack.procs, infra_pids(stack.run_dir, stack.database)).open()
    load = asyncio.create_task(
        open_loop(rate, args.profile_seconds + 4, submitter(stack, workflow_id))
    )
    await asyncio.sleep(2)
    procs = {
        name: await spy.record(pids[name], args.profile_seconds, folder / f"{name}.txt")
        for name in wanted
    }
    for proc in procs.values():
        if proc is not None:
            await proc.wait()
    usage = cpu.close()
    run = await load
    await wait_drained(stack, run, 20)
    return {
        "cpu": usage,
        "files": str(folder.relative_to(REPO)),
        "sampler": f"py-spy record --gil --nonblocking --rate 100, {args.profile_seconds} s",
        **spy.summarize_files(folder, wanted),
    }


# --- phase 2, 3, 5: the half-load soak ------------------------------------------------------------


@dataclass
class ListBench:
    """List queries against a gateway serving the bulk read model (≥1M executions)."""

    client: HttpClient
    auth: bytes
    variants: list[tuple[str, str]]  # (name, path?query)
    timings: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    async def one(self, outcome: Outcome) -> None:
        name, path = self.variants[outcome.index % len(self.variants)]
        status, payload = await self.client.request("GET", path, headers=self.auth, timeout_s=10)
        outcome.status = status
        if status != 200:
            self.errors += 1
            raise RuntimeError(f"HTTP {status}: {payload[:120]!r}")
        outcome.result = name


async def list_variants(info: dict[str, Any], depths: list[int]) -> list[tuple[str, str]]:
    """First pages and pages behind cursors `depth` rows deep, for each filter combination.
    Deep cursors are made the way the gateway makes them (its own encoder, the filters'
    fingerprint) around a boundary id found in the read model."""
    from jobsprint.gateway.filters import ExecutionFilters
    from jobsprint.gateway.pagination import encode_cursor

    workspace_id = info["workspace_id"]
    busiest, rare = info["workflows"][0], info["workflows"][min(9, len(info["workflows"]) - 1)]
    combos: list[tuple[str, dict[str, str]]] = [
        ("no filter", {}),
        ("workflowId", {"workflowId": busiest}),
        ("status=error", {"status": "error"}),
        ("workflowId+status=success", {"workflowId": busiest, "status": "success"}),
        ("rare workflowId+status=error", {"workflowId": rare, "status": "error"}),
    ]
    variants = []
    async with await psycopg.AsyncConnection.connect(info["url"], autocommit=True) as conn:
        for name, params in combos:
            fp = ExecutionFilters.parse(
                workflow_id=params.get("workflowId"),
                status=params.get("status"),
                from_date=None,
                to_date=None,
            ).fingerprint()
            where = "workspace_id = %s"
            values: list[Any] = [workspace_id]
            if "workflowId" in params:
                where += " AND workflow_id = %s"
                values.append(params["workflowId"])
            if "status" in params:
                where += " AND status = %s"
                values.append(params["status"])
            cur = await conn.execute(f"SELECT count(*) FROM executions WHERE {where}", values)
            row = await cur.fetchone()
            total = int(row[0]) if row else 0
            query = "&".join(f"{k}={v}" for k, v in params.items())
            base = "/v1/executions?limit=20" + (f"&{query}" if query else "")
            variants.append((f"{name} · first page", base))
            for depth in depths:
                depth_rows = depth if depth > 0 else int(total * -depth / 100)
                if depth_rows >= total - 20:
                    depth_rows = max(0, total - 21)
                cur = await conn.execute(
                    f"SELECT id FROM executions WHERE {where} ORDER BY id DESC OFFSET %s LIMIT 1",
                    [*values, depth_rows],
                )
                found = await cur.fetchone()
                if found is None:
                    continue
                cursor = encode_cursor(found[0], "after", fp)
                label = (
                    f"{depth_rows:,} rows deep"
                    if depth > 0
                    else f"{-depth}% deep ({depth_rows:,} rows)"
                )
                variants.append((f"{name} · {label} (of {total:,})", f"{base}&after={cursor}"))
    return variants


async def walk_pages(
    client: HttpClient, auth: bytes, pages: int, limit: int = 100
) -> dict[str, Any]:
    """Follow `nextCursor` from the first page `pages` times (real cursors, as a client
    pages), timing every page."""
    timings = []
    path = f"/v1/executions?limit={limit}"
    rows = 0
    for _ in range(pages):
        began = time.monotonic()
        status, payload = await client.request("GET", path, headers=auth, timeout_s=10)
        timings.append((time.monotonic() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"walking pages: HTTP {status}")
        doc = orjson.loads(payload)
        rows += len(doc["data"])
        cursor = doc["pagination"]["nextCursor"]
        if not cursor:
            break
        path = f"/v1/executions?limit={limit}&after={cursor}"
    return {"pages": len(timings), "rows": rows, "page_ms": summarize(timings)}


class BenchGateway:
    """A second gateway process serving the bulk read model (own port, own database)."""

    def __init__(self, info: dict[str, Any], bootstrap: str, port: int) -> None:
        self.info = info
        self.bootstrap = bootstrap
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> str:
        OUT.mkdir(parents=True, exist_ok=True)
        log = open(OUT / "bench-gateway.log", "ab")  # noqa: SIM115 - handed to the child
        env = {
            **os.environ,
            "JOBSPRINT_KAFKA_BOOTSTRAP": self.bootstrap,
            "JOBSPRINT_DATABASE_URL": self.info["url"],
            "JOBSPRINT_TOPIC_PREFIX": self.info["prefix"],
            "JOBSPRINT_HTTP_PORT": str(self.port),
            "JOBSPRINT_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "JOBSPRINT_LOG_LEVEL": "WARNING",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobsprint.gateway"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{self.port}"
        client = HttpClient(url, max_connections=2)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = await client.request("GET", "/healthz", timeout_s=2)
                if status == 200:
                    break
            except (OSError, TimeoutError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bench gateway did not start; see {log.name}")
            await asyncio.sleep(0.3)
        await client.close()
        return url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


MIX = ("wait", "async", "poll", "wait", "async")  # request i uses MIX[i % 5]


class MixedLoad:
    """One open-loop stream at half load whose requests take turns between the three ways
    of waiting for a result, so all three are measured under the same conditions:
    `wait` (POST with waitForCompletion), `poll` (async POST, then GET every `interval_s`
    until `success`) and `async` (async POST; completion seen by LISTEN on the read
    model)."""

    def __init__(self, stack: Stack, workflow_id: str, interval_s: float) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.wait = submitter(stack, workflow_id, wait=True)
        self.submit = submitter(stack, workflow_id)
        self.poll_ms: list[tuple[float, float]] = []  # (due, ms)
        self.polls = 0

    async def request(self, outcome: Outcome) -> None:
        kind = MIX[outcome.index % len(MIX)]
        if kind == "wait":
            await self.wait(outcome)
            return
        await self.submit(outcome)
        if kind == "poll":
            await self._poll(outcome)

    async def _poll(self, outcome: Outcome) -> None:
        stack = self.stack
        assert stack.client is not None
        path = f"/v1/executions/{outcome.result}"
        auth = stack.auth(outcome.index + 1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(self.interval_s)
            status, payload = await stack.client.request("GET", path, headers=auth, timeout_s=10)
            self.polls += 1
            if status != 200:
                raise RuntimeError(f"poll HTTP {status}")
            if b'"status":"success"' in payload[:400]:
                self.poll_ms.append((outcome.due, (time.monotonic() - outcome.due) * 1000))
                return
        raise TimeoutError


async def soak(
    stack: Stack, rate: float, args: Any, list_info: dict[str, Any] | None
) -> dict[str, Any]:
    """`args.soak` seconds at `rate` (half the sustained rate) of mixed requests (see
    MixedLoad), with list queries on the 1M-row read model running alongside. Projector
    lag and process memory are measured throughout."""
    assert stack.procs is not None and stack.notes is not None
    total = args.soak
    workflow_id = await stack.create_workflow("half load")
    queries = ListQueries(list_info, args) if list_info is not None else None
    if queries is not None:
        say("  list queries: starting the bulk-data gateway, finding deep cursors …")
        await queries.prepare()
    say(f"half-load soak at {rate:.0f}/s for {total:.0f} s (waitForCompletion, polling, async)")
    started = time.monotonic()
    cpu = CpuWindow(stack.procs, infra_pids(stack.run_dir, stack.database)).open()
    mixed = MixedLoad(stack, workflow_id, args.poll_interval_ms / 1000)
    load = asyncio.create_task(open_loop(rate, total, mixed.request, grace_s=70))
    list_result: dict[str, Any] | None = None
    try:
        if queries is not None:
            await asyncio.sleep(5)
            list_result = await queries.run(total - 10)
        run = await load
    finally:
        # after the load: stopping the list gateway is a burst of CPU of its own
        if queries is not None:
            await queries.close()
    usage = cpu.close()
    ended = time.monotonic()
    await wait_drained(stack, run, 30)

    warm = min(15.0, total / 10)
    kinds: dict[str, list[Outcome]] = {k: [] for k in set(MIX)}
    for o in run.outcomes:
        kinds[MIX[o.index % len(MIX)]].append(o)
    done = completion_times(stack, run)

    def counts(outcomes: list[Outcome]) -> dict[str, Any]:
        errors = [o for o in outcomes if o.error is not None]
        kinds_of: dict[str, int] = {}
        for o in errors:
            key = (o.error or "")[:60]
            kinds_of[key] = kinds_of.get(key, 0) + 1
        return {"requests": len(outcomes), "errors": len(errors), "error_kinds": kinds_of}

    out: dict[str, Any] = {
        "rate": rate,
        "seconds": total,
        "achieved_rate": round(run.achieved_rate, 1),
        "generator_late_max_ms": round(run.late_max_ms, 1),
        "mix": "".join(k[0] for k in MIX) + " (w=waitForCompletion, a=async, p=poll)",
        "cpu": usage,
        "cpu_ms_per_execution": cpu_per_execution(usage, run.achieved_rate),
    }
    out["wait"] = {
        **counts(kinds["wait"]),
        "latency_ms": summarize(
            [o.latency_ms for o in kinds["wait"] if o.error is None and o.due >= run.started + warm]
        ),
    }
    out["wait"]["p99_by_10s"] = _p99_by_window(
        [(o.due - run.started, o.latency_ms) for o in kinds["wait"] if o.error is None], 10
    )
    out["poll"] = {
        **counts(kinds["poll"]),
        "poll_requests": mixed.polls,
        "poll_interval_ms": args.poll_interval_ms,
        "latency_ms": summarize([ms for due, ms in mixed.poll_ms if due >= run.started + warm]),
    }
    out["async"] = {
        **counts(kinds["async"]),
        "accept_ms": summarize([o.latency_ms for o in kinds["async"] if o.error is None]),
        "e2e_notify_ms": summarize(
            [
                (done[o.result] - o.due) * 1000
                for o in kinds["async"]
                if o.result in done and o.due >= run.started + warm
            ]
        ),
    }
    # projector lag: ExecutionSucceeded's event time (= finished_at) -> NOTIFY received
    ids = [o.result for o in run.outcomes if o.result is not None]
    finished = await finished_times(stack.database_url, ids)
    lags = [
        (stack.notes.seen[i][0] - finished[i][0]) * 1000
        for i in ids
        if i in finished and i in stack.notes.seen
    ]
    out["projector_lag_ms"] = summarize(lags)
    out["rss"] = _rss_growth(stack.procs, started, ended)
    out["rss_series_mb"] = _rss_series(stack.procs, started, ended)
    if list_result is not None:
        out["list"] = list_result
    return out


def _p99_by_window(samples: list[tuple[float, float]], window_s: float) -> list[float | None]:
    """p99 of (seconds into the run, ms) samples in each `window_s` window: a stall shows as
    one bad window, a slow system as all of them."""
    windows: dict[int, list[float]] = {}
    for at, ms in samples:
        windows.setdefault(int(at // window_s), []).append(ms)
    return [summarize(windows.get(i, []))["p99"] for i in range(max(windows, default=-1) + 1)]


def _rss_series(procs: ProcessSampler, start: float, end: float) -> dict[str, list[float]]:
    """RSS per service, one value per minute of the soak (the mean of that minute)."""
    series: dict[str, list[float]] = {}
    minute = start
    while minute + 60 <= end + 1:
        for name in procs.series:
            values = procs.rss_between(name, minute, minute + 60)
            if values:
                series.setdefault(name, []).append(round(sum(values) / len(values), 1))
        minute += 60
    return series


def _rss_growth(procs: ProcessSampler, start: float, end: float) -> dict[str, Any]:
    """Mean RSS in the soak's second minute vs. its last minute, per service."""
    growth = {}
    for name in procs.series:
        early = procs.rss_between(name, start + 60, start + 120)
        late = procs.rss_between(name, end - 60, end)
        if not early or not late:
            continue
        a = sum(early) / len(early)
        b = sum(late) / len(late)
        growth[name] = {
            "early_mb": round(a, 1),
            "late_mb": round(b, 1),
            "growth_mb": round(b - a, 1),
            "growth_pct": round(100 * (b - a) / a, 1) if a else 0.0,
        }
    return growth


class ListQueries:
    """List queries against a gateway of their own serving the bulk read model: `prepare()`
    (start it, find the deep cursors, walk real cursors, warm up) before the load starts,
    then `run()` while it runs."""

    def __init__(self, info: dict[str, Any], args: Any) -> None:
        self.info = info
        self.args = args
        self.gateway = BenchGateway(info, args.bootstrap, args.list_port)
        self.client: HttpClient | None = None
        self.auth = f"Authorization: Bearer {info['token']}\r\n".encode()
        self.variants: list[tuple[str, str]] = []
        self.walk: dict[str, Any] = {}

    async def prepare(self) -> None:
        url = await self.gateway.start()
        self.client = HttpClient(url, max_connections=16)
        self.variants = await list_variants(self.info, [10_000, -50, -99])
        for _, path in self.variants:  # warm the connections and Postgres' caches
            await self.client.request("GET", path, headers=self.auth)
        self.walk = await walk_pages(self.client, self.auth, self.args.walk_pages)

    async def run(self, seconds: float) -> dict[str, Any]:
        assert self.client is not None
        bench = ListBench(self.client, self.auth, self.variants)
        run = await open_loop(self.args.list_rate, seconds, bench.one, grace_s=15)
        by_variant: dict[str, list[float]] = {}
        for o in run.ok():
            by_variant.setdefault(str(o.result), []).append(o.latency_ms)
        all_ms = [ms for v in by_variant.values() for ms in v]
        per_variant = {name: summarize(v) for name, v in by_variant.items()}
        worst = max((s["p99"] for s in per_variant.values() if s["p99"] is not None), default=None)
        return {
            "executions_in_read_model": self.info.get("read_model_executions"),
            "rate": self.args.list_rate,
            "seconds": seconds,
            "requests": run.offered,
            "errors": len(run.errors()),
            "error_kinds": run.error_kinds(),
            "all": summarize(all_ms),
            "worst_variant_p99": worst,
            "variants": per_variant,
            "walk_before_load": self.walk,
        }

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        self.gateway.stop()


async def list_queries(info: dict[str, Any], args: Any, seconds: float) -> dict[str, Any]:
    """List queries alone (no load on the stack)."""
    queries = ListQueries(info, args)
    try:
        await queries.prepare()
        return await queries.run(seconds)
    finally:
        await queries.close()


# --- phase 4: metrics ----------------------------------------------------------------------------


async def metrics_queries(args: Any) -> dict[str, Any]:
    """bench/metrics_query.py (the metrics engineer's): --metrics-rows executions' event
    streams produced to the --metrics-prefix topics and loaded into a chDB folder of their own
    by the real metrics service (made once and reused, see bench/metrics_bulk.py), then the
    API's own query function timed per filter."""
    script = REPO / "bench" / "metrics_query.py"
    if not script.exists():
        return {"skipped": "bench/metrics_query.py is missing"}
    folder = Path(args.metrics_folder)
    cmd = [
        sys.executable,
        str(script),
        str(folder),
        "--rows",
        str(args.metrics_rows),
        "--runs",
        str(args.metrics_runs),
        "--prefix",
        args.metrics_prefix,
        "--bootstrap",
        args.bootstrap,
        "--reuse",
    ]
    say(f"metrics: {' '.join(cmd[1:])} …")
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail: list[bytes] = []

    async def relay(stream: asyncio.StreamReader) -> None:
        """Its progress (a build takes long) to our stderr; the last lines kept."""
        async for line in stream:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
            tail.append(line)
            del tail[:-40]

    stdout, _ = await asyncio.gather(proc.stdout.read(), relay(proc.stderr))
    await proc.wait()
    if proc.returncode != 0:
        return {"failed": proc.returncode, "stderr": b"".join(tail).decode()[-2000:]}
    report = orjson.loads(stdout[stdout.index(b"{") :])
    queries = report.get("queries", {})
    p95s = [q["p95_ms"] for q in queries.values()]
    return {
        "command": "python " + " ".join(str(c).replace(f"{REPO}/", "") for c in cmd[1:]),
        "seconds": round(time.monotonic() - began, 1),
        "rows": report.get("stored_rows"),
        "p95": max(p95s) if p95s else None,
        "p50": max(q["p50_ms"] for q in queries.values()) if queries else None,
        "report": report,
        "loaded_by": "generated event streams produced to Kafka and loaded into chDB by the "
        "real metrics service (bench/metrics_bulk.py)"
        + ("" if (report.get("data") or {}).get("logs_in_topic") else ", LogRecorded left out"),
    }


# --- phase 5b: rebuild replay ------------------------------------------------------------------


async def replay(args: Any) -> dict[str, Any]:
    """`python -m jobsprint.projector rebuild` over a topic of generated executions (the same
    13-event streams the live workflow appends)."""
    target = BulkTarget(
        prefix=args.replay_prefix,
        database=args.bulk_database,
        workspace="bench-replay",
        executions=args.replay_executions,
        days=1,
        seed=23,
    )
    info = await ensure_bulk(target, args.bootstrap, args.database_url, fold=False)
    url = with_database(args.database_url, args.bulk_database)
    env = {
        **os.environ,
        "JOBSPRINT_KAFKA_BOOTSTRAP": args.bootstrap,
        "JOBSPRINT_DATABASE_URL": url,
        "JOBSPRINT_TOPIC_PREFIX": args.replay_prefix,
        "JOBSPRINT_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "jobsprint.projector", "rebuild", "--schema", "bench_rebuild"]
    cmd += ["--workers", str(args.replay_workers)]
    say(
        f"replay: JOBSPRINT_TOPIC_PREFIX={args.replay_prefix}"
        " python -m jobsprint.projector rebuild …"
    )
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO
    )
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        return {"failed": proc.returncode, "stderr": stderr.decode()[-2000:]}
    summary = orjson.loads(stdout.strip().splitlines()[-1])
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM bench_rebuild.executions")
        row = await cur.fetchone()
        summary["executions_rebuilt"] = int(row[0]) if row else 0
        await conn.execute("DROP SCHEMA bench_rebuild CASCADE")
    return {
        "command": f"JOBSPRINT_TOPIC_PREFIX={args.replay_prefix} "
        f"JOBSPRINT_DATABASE_URL=…/{args.bulk_database} "
        "python -m jobsprint.projector rebuild --schema bench_rebuild"
        f" --workers {args.replay_workers}",
        "topic_executions": info.get("executions"),
        "topic_events": info.get("events"),
        **summary,
    }


async def list_data(args: Any) -> dict[str, Any]:
    target = BulkTarget(
        prefix=args.bulk_prefix,
        database=args.bulk_database,
        workspace="bench-list",
        executions=args.bulk,
    )
    return await ensure_bulk(target, args.bootstrap, args.database_url, timeout_s=args.bulk_timeout)
