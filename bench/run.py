"""Jobsprint benchmark: open-loop load against the running local stack (`make up`).

    python bench/run.py                       everything (what `make bench` runs)
    python bench/run.py --only throughput     one or more phases, comma-separated
    python bench/run.py --only soak --rate 600  the half-load phases at 300/s

Phases:
  throughput  step the offered rate (--steps, --step-seconds each) until the system stops
              keeping up, hold the best rate --hold seconds, then profile it with py-spy
  soak        --soak seconds at half that rate: waitForCompletion latency, polling latency,
              projector lag, list queries on the bulk read model, memory growth
  list        (inside soak) needs the bulk read model: --bulk executions produced to the
              `--bulk-prefix` topics and folded by the real projector into --bulk-database
              (made once, reused)
  metrics     bench/metrics_query.py: the metrics query timed over --metrics-rows executions
              whose event streams are produced to the `--metrics-prefix` topics and loaded
              into the chDB folder --metrics-folder by the real metrics service (made once,
              reused; see bench/metrics_bulk.py)
  replay      `projector rebuild` over --replay-executions generated executions

Writes bench/results/latest.json and bench/results/latest.md (and prints the table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import uvloop  # noqa: E402

from bench import phases  # noqa: E402
from bench.bulk import say  # noqa: E402
from bench.loadgen import HttpClient  # noqa: E402
from bench.probes import (  # noqa: E402
    LagSampler,
    Notifications,
    ProcessSampler,
    loadavg,
    machine,
    service_pids,
)
from bench.report import markdown, targets  # noqa: E402
from jobsprint.runtime.heap import settle_heap  # noqa: E402

PHASES = ("throughput", "soak", "list", "metrics", "replay")
RESULTS = REPO / "bench" / "results"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gateway", default="http://127.0.0.1:8080", help="gateway under test")
    p.add_argument(
        "--token",
        action="append",
        help="bearer token(s) to use (repeat; default: create --tokens tokens in the "
        "`bench-load` workspace with the gateway's admin code)",
    )
    p.add_argument(
        "--tokens", type=int, default=8, help="tokens to create (rate limit is per token)"
    )
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/jobsprint")
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--topic-prefix", default="jobsprint", help="topic prefix of the stack")
    p.add_argument("--run-dir", default=str(REPO / ".local" / "run"), help="pid files of the stack")
    p.add_argument("--projector-ops", default="http://127.0.0.1:8091/metrics")
    p.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"phases to run, comma-separated (default: all of {','.join(PHASES)})",
    )
    p.add_argument(
        "--steps",
        default="200,300,400,500,600,800,1000",
        help="offered rates to try, upwards until one is not sustained",
    )
    p.add_argument("--step-seconds", type=float, default=30)
    p.add_argument(
        "--bisect", type=int, default=2, help="steps bisecting between the best rate and the miss"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=120,
        help="most seconds to wait after a step for its backlog to clear",
    )
    p.add_argument("--hold", "--duration", type=float, default=120, help="hold seconds")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="skip stepping: the sustained rate to hold (and to halve for the soak)",
    )
    p.add_argument(
        "--max-e2e-p99-ms",
        type=float,
        default=1000,
        help="a step whose accepted→visible p99 exceeds this is not sustained",
    )
    p.add_argument("--profile-seconds", type=int, default=30, help="py-spy window; 0: skip")
    p.add_argument("--soak", type=float, default=600, help="half-load soak seconds")
    p.add_argument("--poll-interval-ms", type=float, default=5)
    p.add_argument("--bulk", type=int, default=1_000_000, help="executions in the list read model")
    p.add_argument("--bulk-prefix", default="bench")
    p.add_argument("--bulk-database", default="jobsprint_bench")
    p.add_argument("--bulk-timeout", type=float, default=3600)
    p.add_argument("--list-port", type=int, default=18080, help="port of the bulk-data gateway")
    p.add_argument("--list-rate", type=float, default=20, help="list queries per second")
    p.add_argument("--walk-pages", type=int, default=100, help="pages of 100 followed by cursor")
    p.add_argument(
        "--metrics-rows",
        type=int,
        default=10_000_000,
        help="executions produced to Kafka and loaded by the real metrics service",
    )
    p.add_argument("--metrics-runs", type=int, default=20, help="timed runs per metrics filter")
    p.add_argument(
        "--metrics-folder",
        default=str(REPO / "bench" / "out" / "chdb-metrics-replay"),
        help="chDB folder the bulk metrics service loads (its own)",
    )
    p.add_argument("--metrics-prefix", default="benchmetrics", help="topic prefix of its events")
    p.add_argument("--replay-prefix", default="benchreplay")
    p.add_argument("--replay-executions", type=int, default=100_000)
    p.add_argument("--replay-workers", type=int, default=2, help="`rebuild --workers`")
    p.add_argument("--output", default=str(RESULTS / "latest.json"))
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the figures of phases not run now from the existing output file",
    )
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = only - set(PHASES)
    if unknown:
        sys.exit(f"unknown phase(s): {', '.join(sorted(unknown))}")
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "command": "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "phases": sorted(only),
        "load": {"at_start": loadavg()},
    }
    began = time.monotonic()
    pids = service_pids(Path(args.run_dir))
    stack = phases.Stack(
        gateway_url=args.gateway,
        database_url=args.database_url,
        bootstrap=args.bootstrap,
        run_dir=Path(args.run_dir),
        projector_ops=args.projector_ops,
        database=args.database_url.rsplit("/", 1)[-1].split("?")[0],
    )
    stack.procs = ProcessSampler(pids)
    stack.procs.start()
    needs_stack = bool(only & {"throughput", "soak"})
    list_info: dict[str, Any] | None = None
    try:
        if "list" in only or ("soak" in only and "list" in only):
            say(f"bulk read model: {args.bulk:,} executions (prefix {args.bulk_prefix}) …")
            list_info = await phases.list_data(args)
            result["bulk"] = {
                k: v for k, v in list_info.items() if k not in ("token", "workflows", "url")
            }
        if needs_stack:
            if not pids:
                sys.exit(f"no running services found in {args.run_dir}: run `make up` first")
            await _open_stack(stack, args)
        if "throughput" in only:
            tp = await phases.throughput(stack, args)
            result["throughput"] = tp
            hold = tp["hold"]
            result["executions_per_s"] = hold["completed_per_s"]
            result["steady_events_per_s"] = hold.get("projector_events_per_s")
            sustained = tp["hold_rate"] if hold["sustainable"] else hold["completed_per_s"]
        else:
            sustained = args.rate
        if "soak" in only:
            if not sustained:
                sys.exit("the soak needs the sustained rate: run throughput too, or give --rate")
            if list_info is None and "list" in only:
                list_info = await phases.list_data(args)
            soak = await phases.soak(stack, float(sustained) / 2, args, list_info)
            result["soak"] = soak
            result["latency_ms"] = soak["wait"]["latency_ms"]
            result["latency_poll_ms"] = soak["poll"]["latency_ms"]
            result["latency_notify_ms"] = soak["async"]["e2e_notify_ms"]
            result["projector_lag_ms"] = soak["projector_lag_ms"]
            if "list" in soak:
                lst = soak["list"]
                result["list_ms"] = {
                    "p95": lst["all"]["p95"],
                    "p99": lst["all"]["p99"],
                    "worst_p99": lst["worst_variant_p99"],
                    "executions": lst["executions_in_read_model"],
                }
        elif "list" in only and list_info is not None:
            # list queries alone (no load on the stack)
            lst = await phases.list_queries(list_info, args, 60)
            result["list"] = lst
            result["list_ms"] = {
                "p95": lst["all"]["p95"],
                "p99": lst["all"]["p99"],
                "worst_p99": lst["worst_variant_p99"],
                "executions": lst["executions_in_read_model"],
                "under_load": False,
            }
        if "replay" in only:
            rp = await phases.replay(args)
            result["replay"] = rp
            result["replay_events_per_s"] = rp.get("events_per_s")
        if "metrics" in only:
            mq = await phases.metrics_queries(args)
            result["metrics"] = mq
            result["metrics_ms"] = {
                "p95": mq.get("p95"),
                "p50": mq.get("p50"),
                "rows": mq.get("rows"),
            }
    finally:
        await stack.procs.stop()
        await _close_stack(stack)
    result["rss_mb"] = {k: round(v, 1) for k, v in sorted(stack.procs.peak_mb.items())}
    result["load"]["at_end"] = loadavg()
    load1 = stack.procs.load1 or [0.0]
    result["load"]["during"] = {
        "min": round(min(load1), 2),
        "mean": round(sum(load1) / len(load1), 2),
        "max": round(max(load1), 2),
    }
    result["load"]["summary"] = (
        f"1-min load average {min(load1):.1f}-{max(load1):.1f} (mean {sum(load1) / len(load1):.1f})"
        " during the run"
    )
    result["seconds"] = round(time.monotonic() - began, 1)
    result["targets"] = [
        {"name": t.name, "target": t.target, "measured": t.measured, "met": t.met}
        for t in targets(result)
    ]
    return result


async def _open_stack(stack: phases.Stack, args: argparse.Namespace) -> None:
    stack.client = HttpClient(args.gateway, max_connections=512)
    status, _ = await stack.client.request("GET", "/readyz")
    if status != 200:
        sys.exit(f"{args.gateway}/readyz answered {status}: is the stack up (`make up`)?")
    if args.token:
        stack.tokens = [f"Authorization: Bearer {t}\r\n".encode() for t in args.token]
    else:
        stack.tokens, _ = await phases.make_tokens(args.database_url, "bench-load", args.tokens)
    stack.notes = Notifications(args.database_url)
    await stack.notes.start()
    prefix = args.topic_prefix
    stack.lag = LagSampler(
        args.bootstrap,
        {
            f"{prefix}.executor": f"{prefix}.commands",
            f"{prefix}.projector": f"{prefix}.events",
            f"{prefix}.metrics": f"{prefix}.events",
        },
    )
    await stack.lag.start()


async def _close_stack(stack: phases.Stack) -> None:
    if stack.lag is not None:
        with contextlib.suppress(Exception):
            await stack.lag.stop()
    if stack.notes is not None:
        await stack.notes.stop()
    if stack.client is not None:
        await stack.client.close()


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with every figure `new` measured replacing it; memory peaks are the max."""
    merged = {**old, **new}
    merged["rss_mb"] = {
        k: max((old.get("rss_mb") or {}).get(k, 0), v) for k, v in new["rss_mb"].items()
    }
    merged["phases"] = sorted(set(old.get("phases", [])) | set(new["phases"]))
    merged["runs"] = [*old.get("runs", [_run_line(old)]), _run_line(new)]
    merged["targets"] = [
        {"name": t.name, "target": t.target, "measured": t.measured, "met": t.met}
        for t in targets(merged)
    ]
    return merged


def _run_line(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "date": result.get("date"),
        "command": result.get("command"),
        "phases": result.get("phases"),
        "load": result.get("load"),
    }


async def run_until_signalled(args: argparse.Namespace) -> dict[str, Any]:
    """`run`, cancelled cleanly (helper processes stopped) on SIGINT or SIGTERM."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await run(args)
    except asyncio.CancelledError:
        sys.exit("[bench] interrupted; nothing written")


def main() -> None:
    args = parser().parse_args()
    settle_heap()  # the generator's own collector pauses would be measured as latency
    result = uvloop.run(run_until_signalled(args))
    output = Path(args.output)
    if args.merge and output.exists():
        result = merge(orjson.loads(output.read_bytes()), result)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    table = markdown(result)
    output.with_suffix(".md").write_text(table)
    print(table)
    say(f"wrote {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")


if __name__ == "__main__":
    main()
