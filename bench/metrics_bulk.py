"""The metrics benchmark's bulk data, made the way production makes it: generated event
streams (bench/eventgen.py) produced to the events topic of a topic prefix of their own, and
loaded into a chDB folder of their own by the REAL metrics service (`python -m
jobsprint.metrics`, its Kafka loader) run as a subprocess until its checkpoints (read over its
`POST /v1/sql`) reach the topic's end offsets. Nothing writes the tables but the service.

In two stages, as a long-running service's tables look: the history (every execution
created before the last `recent_ms`) is produced while the service already loads it (the
producer and the loader each keep a core busy), then merged with `OPTIMIZE … FINAL` (what a
service running for months would have merged by then); then the recent tail is produced and
loaded in about `recent_inserts` inserts (the loader's batch size is set so), which stay
unmerged. For the history the service runs with a batch of `batch_rows` events (its
JOBSPRINT_METRICS_BATCH_MAX_ROWS; the default of 5,000 costs the same CPU but more round trips).

The data: `executions` executions created evenly over the `days` before `now_ms`,
`workspaces` workspaces of which the first holds half, `workflows` workflows each (uniform;
`two_step_share` of them run two transform steps, the others one), 88 % success, 8 % error,
3 % cancelled, 1 % still running, durations log-normal (mu 7.5, sigma 1.0 in ms: median about
1.8 s), a third triggered by webhook, 0.1 % of the finished ones deleted. With `logs=False`
(the default) the LogRecorded events are left out: the loader skips them undecoded, so they
would only cost Kafka and the producer; every other event is what the executor appends, seq
included.

Reuse: a state file (bench/out/metrics-bulk-<prefix>.json) records the stage reached; a later
run with the same spec and folder carries on from there (a finished build is skipped), any
other starts over (the prefix's topics and the folder are deleted first). Once the folder is
complete the prefix's topics are deleted: the folder is what is reused, and the broker keeps
events forever (about 2.5 KB an execution).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from bench.bulk import OUT, REPO, produce, say, topic_offsets
from bench.eventgen import StreamMaker, Workflow, make_id

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# final status shares (as the synthetic data before had them)
STATUS_SHARES = (("success", 0.88), ("error", 0.08), ("cancelled", 0.03), ("running", 0.01))
DELETED_SHARE = 0.001  # of the finished executions
WEBHOOK_SHARE = 1 / 3
DURATION_MU, DURATION_SIGMA = 7.5, 1.0  # log-normal, in ms
TIMEOUT_MS = 300_000  # the requests' timeout_s: nothing runs longer
PARTITIONS = 6
COUNTED = ("success", "error")  # what finished_executions holds (undeleted)
PROGRESS_EVERY = 1_000_000


@dataclass(frozen=True)
class MetricsBulk:
    """One bulk data set: what to generate (the spec) and where it goes."""

    folder: Path
    now_ms: int
    executions: int = 10_000_000
    prefix: str = "benchmetrics"
    database: str = "bench"
    days: int = 90
    workspaces: int = 20
    workflows: int = 50
    recent_ms: int = 2 * HOUR_MS
    recent_inserts: int = 20
    logs: bool = False
    two_step_share: float = 0.5  # of the workflows (the others run one step)
    seed: int = 31
    batch_rows: int = 20_000  # the service's JOBSPRINT_METRICS_BATCH_MAX_ROWS for the history

    def spec(self) -> dict[str, Any]:
        """What defines the data (not where it is, nor how fast it is loaded)."""
        spec = asdict(self)
        del spec["folder"], spec["batch_rows"]
        return spec

    @property
    def span_ms(self) -> int:
        return self.days * DAY_MS

    def created_ms(self, index: int) -> int:
        """Request time of execution `index`: evenly over the span, ascending."""
        return self.now_ms - self.span_ms + index * self.span_ms // self.executions

    def tail_start(self) -> int:
        """Index of the first execution of the recent tail."""
        return min(
            self.executions,
            math.ceil((self.span_ms - self.recent_ms) * self.executions / self.span_ms),
        )


@dataclass(frozen=True)
class Plan:
    workspaces: list[str]  # the first is the big one
    workflows: dict[str, list[Workflow]]  # per workspace

    def ids(self) -> dict[str, str]:
        """Ids the metrics query's filters use: the big workspace, one of its workflows, and
        a small workspace."""
        big = self.workspaces[0]
        return {
            "big_workspace": big,
            "big_workspace_workflow": self.workflows[big][7 % len(self.workflows[big])].id,
            "small_workspace": self.workspaces[min(4, len(self.workspaces) - 1)],
        }


def make_plan(bulk: MetricsBulk) -> Plan:
    rng = random.Random(bulk.seed)
    made_ms = bulk.now_ms - bulk.span_ms - DAY_MS
    workspaces = [make_id("ws", made_ms + i, rng) for i in range(bulk.workspaces)]
    workflows = {
        ws: [
            Workflow(
                make_id("wf", made_ms + 1000 + i, rng),
                f"Workflow {i}",
                1.0,
                steps=2 if i < round(bulk.workflows * bulk.two_step_share) else 1,
            )
            for i in range(bulk.workflows)
        ]
        for ws in workspaces
    }
    return Plan(workspaces, workflows)


@dataclass
class Tally:
    """What was generated, to check the loaded tables against."""

    executions: int = 0
    events: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    deleted: int = 0
    finished: int = 0  # success or error, not deleted: the rows of finished_executions FINAL

    def add(self, other: dict[str, Any]) -> None:
        self.executions += other["executions"]
        self.events += other["events"]
        self.statuses.update(other["statuses"])
        self.deleted += other["deleted"]
        self.finished += other["finished"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "executions": self.executions,
            "events": self.events,
            "statuses": dict(sorted(self.statuses.items())),
            "deleted": self.deleted,
            "finished": self.finished,
        }


def streams(
    bulk: MetricsBulk, plan: Plan, start: int, stop: int, tally: Tally
) -> Iterator[tuple[str, list[bytes]]]:
    """The event streams of executions `start` … `stop - 1`, in creation order. Each range
    draws from its own seed, so the tail is made without generating the history again."""
    rng = random.Random(bulk.seed * 1_000_003 + start)
    maker = StreamMaker(plan.workspaces[0], seed=bulk.seed * 7 + start)
    small = len(plan.workspaces) - 1
    for index in range(start, stop):
        if small == 0 or rng.random() < 0.5:
            workspace = plan.workspaces[0]
        else:
            workspace = plan.workspaces[1 + rng.randrange(small)]
        workflows = plan.workflows[workspace]
        workflow = workflows[rng.randrange(len(workflows))]
        x = rng.random()
        status = STATUS_SHARES[-1][0]
        for name, share in STATUS_SHARES:
            if x < share:
                status = name
                break
            x -= share
        duration = min(int(rng.lognormvariate(DURATION_MU, DURATION_SIGMA)), TIMEOUT_MS)
        triggered_by = "webhook" if rng.random() < WEBHOOK_SHARE else "api"
        deleted = status != "running" and rng.random() < DELETED_SHARE
        execution_id, events = maker.execution(
            workflow,
            bulk.created_ms(index),
            status,
            workspace_id=workspace,
            triggered_by=triggered_by,
            duration_ms=duration,
            deleted_after_ms=rng.randrange(1_000, 60_000) if deleted else None,
            logs=bulk.logs,
        )
        tally.executions += 1
        tally.events += len(events)
        tally.statuses[status] += 1
        tally.deleted += deleted
        tally.finished += status in COUNTED and not deleted
        if tally.executions % PROGRESS_EVERY == 0:
            say(f"  … {tally.executions:,}/{stop - start:,} executions produced")
        yield execution_id, events


# --- Kafka ------------------------------------------------------------------------------------


def compression() -> str | None:
    """lz4 (else zstd) when this aiokafka can compress with it (it needs cramjam), else none."""
    from aiokafka import codec

    if codec.has_lz4():
        return "lz4"
    if codec.has_zstd():
        return "zstd"
    return None


def topic_names(prefix: str) -> list[str]:
    from jobsprint.events import Topics

    return list(Topics(prefix).all())


async def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    """Delete the prefix's topics and wait until they are gone (a topic being deleted cannot
    be created again)."""
    names = set(topic_names(prefix))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="jobsprint-bench")
    await admin.start()
    try:
        existing = names & set(await admin.list_topics())
        if existing:
            say(f"deleting topics {', '.join(sorted(existing))} …")
            await admin.delete_topics(sorted(existing))
        for _ in range(300):
            if not names & set(await admin.list_topics()):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"topics {sorted(names)} were not deleted within 60 s")
    finally:
        await admin.close()


# --- the metrics service --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def kafka_pid() -> int | None:
    try:
        pid = int((REPO / ".local" / "run" / "kafka.pid").read_text().strip())
        cpu_seconds(pid)
    except (OSError, ValueError):
        return None
    return pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = orjson.dumps(body) if body is not None else None
    method = "POST" if data else "GET"
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Service:
    """The real metrics service over `bulk.folder` and `bulk.prefix`, as a subprocess."""

    def __init__(self, bulk: MetricsBulk, bootstrap: str, batch_max_rows: int | None) -> None:
        self.bulk = bulk
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSPRINT_")}
        env.update(
            {
                "JOBSPRINT_KAFKA_BOOTSTRAP": bootstrap,
                "JOBSPRINT_TOPIC_PREFIX": bulk.prefix,
                "JOBSPRINT_PARTITIONS": str(PARTITIONS),
                "JOBSPRINT_CHDB_PATH": str(bulk.folder),
                "JOBSPRINT_CLICKHOUSE_DATABASE": bulk.database,
                "JOBSPRINT_METRICS_HTTP_PORT": str(self.port),
                "JOBSPRINT_LOG_LEVEL": "WARNING",
            }
        )
        if batch_max_rows is not None:
            env["JOBSPRINT_METRICS_BATCH_MAX_ROWS"] = str(batch_max_rows)
        OUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT / f"metrics-{bulk.prefix}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobsprint.metrics"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"the metrics service exited with {self.proc.returncode}; see {self.log_path}"
            )

    async def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status, _ = await asyncio.to_thread(http, f"{self.base}/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the metrics service was not ready within {timeout_s:.0f} s")

    async def sql(self, statement: str) -> list[list[Any]]:
        status, body = await asyncio.to_thread(http, f"{self.base}/v1/sql", {"sql": statement})
        if status != 200:
            raise RuntimeError(f"POST /v1/sql answered {status}: {body[:500]!r}")
        return list(orjson.loads(body)["data"]["rows"])

    async def checkpoints(self, topic: str) -> dict[int, int]:
        rows = await self.sql(
            f"SELECT partition, max(next_offset) FROM {self.bulk.database}.checkpoints"
            f" WHERE topic = '{topic}' GROUP BY partition"
        )
        return {int(p): int(o) for p, o in rows}

    async def counters(self) -> dict[str, float]:
        """The loader's event counters by outcome, and its dead letters."""
        _, body = await asyncio.to_thread(http, f"{self.base}/metrics")
        found: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("jobsprint_metrics_events_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                found[outcome] = found.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
            elif line.startswith("jobsprint_dead_letters_total"):
                found["dead_letters"] = found.get("dead_letters", 0.0) + float(
                    line.rsplit(" ", 1)[1]
                )
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def load(
    bulk: MetricsBulk,
    bootstrap: str,
    end: dict[int, int] | None = None,
    *,
    produce: Callable[[], Awaitable[dict[int, int]]] | None = None,
    batch_max_rows: int | None = None,
    timeout_s: float = 4 * 3600,
) -> dict[str, Any]:
    """Run the metrics service until its checkpoints reach `end` (partition -> end offset
    of the events topic), then stop it. With `produce`, that is run once the service is up
    (so both cores work: the service loads while the producer still produces) and the end
    offsets it returns are the target. Returns the catch-up rate and CPU times."""
    topic = f"{bulk.prefix}.events"
    before = await asyncio.to_thread(folder_checkpoints, bulk, topic)
    kafka = kafka_pid()
    kafka0 = cpu_seconds(kafka) if kafka else 0.0
    started = last_report = time.monotonic()  # rate and CPU include the service's start-up
    service = Service(bulk, bootstrap, batch_max_rows)
    try:
        await service.wait_ready()
        say(f"metrics service ({bulk.prefix} → {bulk.folder}) loading …")
        if produce is not None:
            end = await produce()
        assert end is not None
        todo = sum(max(0, o - before.get(p, 0)) for p, o in end.items())
        while True:
            service.check_alive()
            now_pos = await service.checkpoints(topic)
            left = sum(max(0, o - now_pos.get(p, 0)) for p, o in end.items())
            now = time.monotonic()
            if left == 0:
                break
            if now - last_report >= 30:
                last_report = now
                done = todo - left
                say(
                    f"  … {done:,}/{todo:,} records loaded ({done / (now - started):,.0f}/s),"
                    f" load {os.getloadavg()[0]:.1f}"
                )
            if now - started > timeout_s:
                raise TimeoutError(f"the metrics service did not catch up in {timeout_s:.0f} s")
            await asyncio.sleep(1)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(service.proc.pid)
        peak_mb = peak_rss_mb(service.proc.pid)
        counters = await service.counters()
    finally:
        service.stop()
    if counters.get("dead_letters", 0) or counters.get("dead_lettered", 0):
        raise RuntimeError(f"the metrics service dead-lettered events: {counters}")
    result: dict[str, Any] = {
        "records": todo,
        "seconds": round(seconds, 1),
        "records_per_s": round(todo / seconds, 1) if seconds else None,
        "service_cpu_s": round(cpu, 1),
        "service_cpu_us_per_record": round(cpu / todo * 1e6, 1) if todo else None,
        "service_peak_rss_mb": peak_mb,
        "batch_max_rows": batch_max_rows,
        "events_by_outcome": {k: int(v) for k, v in sorted(counters.items())},
    }
    if kafka:
        result["kafka_cpu_s"] = round(cpu_seconds(kafka) - kafka0, 1)
    return result


def folder_checkpoints(bulk: MetricsBulk, topic: str) -> dict[int, int]:
    """The loader's checkpoints stored in the folder (read while the service is stopped)."""
    from jobsprint.metrics.clickhouse import ChdbClickHouse, ClickHouseError

    if not (bulk.folder / "metadata").exists():
        return {}
    ch = ChdbClickHouse(bulk.folder)
    try:
        rows = ch.query(
            f"SELECT partition, max(next_offset) FROM {bulk.database}.checkpoints"
            f" WHERE topic = '{topic}' GROUP BY partition"
        )
    except ClickHouseError:  # no database or table yet
        return {}
    finally:
        ch.close()
    return {int(p): int(o) for p, o in rows}


def optimize(bulk: MetricsBulk) -> float:
    """Merge the loaded history as a long-running service's background merges would have
    (the service is stopped: chDB lets one process at a time open the folder)."""
    from jobsprint.metrics.clickhouse import ChdbClickHouse
    from jobsprint.metrics.schema import FINISHED_TABLE

    started = time.monotonic()
    ch = ChdbClickHouse(bulk.folder)
    try:
        for table in ("executions", "steps", FINISHED_TABLE):
            say(f"OPTIMIZE TABLE {bulk.database}.{table} FINAL …")
            ch.command(f"OPTIMIZE TABLE {bulk.database}.{table} FINAL")
    finally:
        ch.close()
    return round(time.monotonic() - started, 1)


# --- the build --------------------------------------------------------------------------------

STAGES = ("history_produced", "history_loaded", "merged", "tail_produced", "done")


def state_file(bulk: MetricsBulk) -> Path:
    return OUT / f"metrics-bulk-{bulk.prefix}.json"


async def produce_range(
    bulk: MetricsBulk, bootstrap: str, plan: Plan, start: int, stop: int
) -> dict[str, Any]:
    topic = f"{bulk.prefix}.events"
    tally = Tally()
    cpu0 = time.process_time()
    kafka = kafka_pid()
    kafka0 = cpu_seconds(kafka) if kafka else 0.0
    codec = compression()
    say(
        f"{topic}: producing executions {start:,}…{stop - 1:,}"
        f" (compression: {codec or 'none, aiokafka lacks lz4/zstd here'}) …"
    )
    events, seconds = await produce(
        bootstrap,
        topic,
        PARTITIONS,
        streams(bulk, plan, start, stop, tally),
        compression_type=codec,
    )
    _, end = await topic_offsets(bootstrap, topic)
    rate = events / seconds if seconds else 0.0
    say(f"{topic}: produced {events:,} events in {seconds:.0f} s ({rate:,.0f}/s)")
    result: dict[str, Any] = {
        "range": [start, stop],
        "tally": tally.as_dict(),
        "produced_s": round(seconds, 1),
        "events_per_s": round(rate, 1),
        "producer_cpu_s": round(time.process_time() - cpu0, 1),
        "compression": codec,
        "end_offsets": {str(p): o for p, o in sorted(end.items())},
    }
    if kafka:
        result["kafka_cpu_s"] = round(cpu_seconds(kafka) - kafka0, 1)
    return result


async def ensure_metrics_bulk(
    bulk: MetricsBulk, bootstrap: str, *, reuse: bool = True, timeout_s: float = 4 * 3600
) -> dict[str, Any]:
    """Make sure `bulk.folder` holds the loaded data of `bulk` (built or carried on from the
    stage a state file records). Returns the state: ids, expected counts, rates."""
    from jobsprint.events import Topics
    from jobsprint.runtime.kafka import ensure_topics

    began = time.monotonic()
    path = state_file(bulk)
    state: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    folder_ok = (bulk.folder / "metadata").exists()
    carry_on = (
        reuse
        and state.get("spec") == bulk.spec()
        and state.get("folder") == str(bulk.folder)
        and state.get("stage") in STAGES
        and (folder_ok or state.get("stage") == "history_produced")
    )
    plan = make_plan(bulk)
    if carry_on and state["stage"] == "done":
        say(f"metrics bulk: reusing {bulk.folder} ({bulk.executions:,} executions)")
        return {**state, "reused": True}
    if not carry_on:
        await delete_prefix_topics(bootstrap, bulk.prefix)
        if bulk.folder.exists():
            say(f"deleting {bulk.folder} …")
            shutil.rmtree(bulk.folder)
        state = {"spec": bulk.spec(), "folder": str(bulk.folder), "ids": plan.ids()}
    else:
        say(f"metrics bulk: carrying on after stage {state['stage']}")
    await ensure_topics(bootstrap, Topics(bulk.prefix), PARTITIONS)

    def save(stage: str) -> None:
        state["stage"] = stage
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))

    def offsets(part: str) -> dict[int, int]:
        return {int(p): o for p, o in state[part]["end_offsets"].items()}

    tail = bulk.tail_start()
    stage = state.get("stage")
    if stage is None:

        async def produce_history() -> dict[int, int]:
            state["history"] = await produce_range(bulk, bootstrap, plan, 0, tail)
            save("history_produced")
            return offsets("history")

        loaded = await load(
            bulk,
            bootstrap,
            produce=produce_history,
            batch_max_rows=bulk.batch_rows,
            timeout_s=timeout_s,
        )
        state["history"]["load"] = loaded
        save(stage := "history_loaded")
    if stage == "history_produced":  # produced before, loading did not finish
        state["history"]["load"] = await load(
            bulk,
            bootstrap,
            offsets("history"),
            batch_max_rows=bulk.batch_rows,
            timeout_s=timeout_s,
        )
        save(stage := "history_loaded")
    if stage == "history_loaded":
        state["merge_s"] = await asyncio.to_thread(optimize, bulk)
        save(stage := "merged")
    if stage == "merged":
        state["tail"] = await produce_range(bulk, bootstrap, plan, tail, bulk.executions)
        save(stage := "tail_produced")
    if stage == "tail_produced":
        records = state["tail"]["tally"]["events"]
        state["tail"]["load"] = await load(
            bulk,
            bootstrap,
            offsets("tail"),
            batch_max_rows=max(100, records // max(1, bulk.recent_inserts)),
            timeout_s=timeout_s,
        )
        tally = Tally()
        tally.add(state["history"]["tally"])
        tally.add(state["tail"]["tally"])
        state["expected"] = tally.as_dict()
        save("done")
        # the folder is what a later run reuses: give the topic's disk back (about 2.5 KB an
        # execution; the broker keeps events forever)
        await delete_prefix_topics(bootstrap, bulk.prefix)
    state["build_s"] = round(time.monotonic() - began, 1)
    path.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    return {**state, "reused": False}
