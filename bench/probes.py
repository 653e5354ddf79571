"""What the harness watches while load runs: memory and CPU of every service process,
consumer-group lag, the read model's change notifications, and the machine itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.stats import lag_trend

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- the machine ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# --- service processes ----------------------------------------------------------------------


def service_pids(run_dir: Path) -> dict[str, int]:
    """name -> pid of the stack's services (Kafka left out: it is not ours to judge)."""
    found = {}
    for path in sorted(run_dir.glob("*.pid")):
        if path.stem == "kafka":
            continue
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            continue
        found[path.stem] = pid
    return found


def _status_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount = line.split(":", 1)
            values[name] = int(amount.split()[0])
    return values


def _cpu_jiffies(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


@dataclass
class ProcessSampler:
    """Samples VmRSS/VmHWM and CPU time of each service every `every_s` seconds."""

    pids: dict[str, int]
    every_s: float = 1.0
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name -> (t, MB)
    peak_mb: dict[str, float] = field(default_factory=dict)  # VmHWM
    load1: list[float] = field(default_factory=list)  # 1-minute load average, each sample
    _task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, tuple[float, int]]:
        """name -> (RSS MB, CPU jiffies) now."""
        now = time.monotonic()
        self.load1.append(os.getloadavg()[0])
        seen = {}
        for name, pid in self.pids.items():
            try:
                kb = _status_kb(pid)
                jiffies = _cpu_jiffies(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            rss = kb.get("VmRSS", 0) / 1024
            self.series.setdefault(name, []).append((now, rss))
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), kb.get("VmHWM", 0) / 1024)
            seen[name] = (rss, jiffies)
        return seen

    def cpu_jiffies(self) -> dict[str, int]:
        out = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                out[name] = _cpu_jiffies(pid)
        return out

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="process-sampler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def rss_between(self, name: str, start: float, end: float) -> list[float]:
        return [mb for t, mb in self.series.get(name, []) if start <= t <= end]


def infra_pids(run_dir: Path, database: str) -> dict[str, list[int]]:
    """Kafka's pid, and the Postgres backends serving `database` (found by their process
    title `postgres: <user> <database> …`); other databases on the server are not ours."""
    found: dict[str, list[int]] = {"kafka": [], f"postgres ({database} backends)": []}
    with contextlib.suppress(ValueError, FileNotFoundError):
        found["kafka"].append(int((run_dir / "kafka.pid").read_text().strip()))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parts = title.split()
        if len(parts) >= 3 and parts[0] == "postgres:" and parts[2] == database:
            found[f"postgres ({database} backends)"].append(int(entry.name))
    return found


def _sum_jiffies(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            out[pid] = _cpu_jiffies(pid)
    return out


@dataclass
class CpuWindow:
    """CPU used between `open()` and `close()`: by each service, by this process (the
    load generator), and by the whole machine (so the rest — Kafka, Postgres, and anybody
    else on the box — is the difference)."""

    sampler: ProcessSampler
    infra: dict[str, list[int]] = field(default_factory=dict)
    start_infra: dict[str, dict[int, int]] = field(default_factory=dict)
    start_t: float = 0.0
    start_services: dict[str, int] = field(default_factory=dict)
    start_machine: tuple[int, int] = (0, 0)
    start_self: float = 0.0

    def open(self) -> CpuWindow:
        self.start_t = time.monotonic()
        self.start_services = self.sampler.cpu_jiffies()
        self.start_infra = {name: _sum_jiffies(pids) for name, pids in self.infra.items()}
        self.start_machine = cpu_busy_jiffies()
        self.start_self = time.process_time()
        return self

    def close(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.start_t
        end_services = self.sampler.cpu_jiffies()
        busy, _ = cpu_busy_jiffies()
        cores = {
            name: round((end_services[name] - j) / CLK_TCK / seconds, 2)
            for name, j in self.start_services.items()
            if name in end_services
        }
        machine_cores = (busy - self.start_machine[0]) / CLK_TCK / seconds
        infra = {}
        for name, before in self.start_infra.items():
            after = _sum_jiffies(list(before))
            used = sum(after[p] - j for p, j in before.items() if p in after)
            infra[name] = round(used / CLK_TCK / seconds, 2)
        return {
            "seconds": round(seconds, 1),
            "services_cores": cores,
            "infra_cores": infra,
            "loadgen_cores": round((time.process_time() - self.start_self) / seconds, 2),
            "machine_busy_cores": round(machine_cores, 2),
            "loadavg": loadavg(),
        }


# --- consumer lag ---------------------------------------------------------------------------


@dataclass
class LagSampler:
    """Lag of consumer groups = end offset of their topic minus their committed offset,
    summed over partitions, every `every_s` seconds. (End offsets count transaction
    markers too: the trend matters here, not the absolute value.)"""

    bootstrap: str
    groups: dict[str, str]  # group id -> topic
    every_s: float = 2.0
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    ends: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # topic -> (t, sum)
    _task: asyncio.Task[None] | None = None
    _admin: AIOKafkaAdminClient | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id="jobsprint-bench-lag"
        )
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id="jobsprint-bench-lag",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._loop(), name="lag-sampler")

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self._consumer is not None
        parts = self._consumer.partitions_for_topic(topic)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def sample(self) -> dict[str, int]:
        assert self._admin is not None and self._consumer is not None
        now = time.monotonic()
        ends: dict[str, dict[TopicPartition, int]] = {}
        for topic in set(self.groups.values()):
            tps = await self._partitions(topic)
            ends[topic] = await self._consumer.end_offsets(tps)
            self.ends.setdefault(topic, []).append((now, sum(ends[topic].values())))
        lags = {}
        for group, topic in self.groups.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            lag = 0
            for tp, end in ends[topic].items():
                meta = committed.get(tp)
                lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
            self.samples.setdefault(group, []).append((now, lag))
            lags[group] = lag
        return lags

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a missed sample must not end the benchmark
                pass
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()
        if self._admin:
            await self._admin.close()

    def window(self, group: str, start: float, end: float) -> list[tuple[float, int]]:
        return [(t, lag) for t, lag in self.samples.get(group, []) if start <= t <= end]

    def trend(self, group: str, start: float, end: float, input_rate: float) -> dict[str, Any]:
        points = [(t - start, float(lag)) for t, lag in self.window(group, start, end)]
        return {**lag_trend(points, input_rate).as_dict(), "samples": len(points)}

    def topic_rate(self, topic: str, start: float, end: float) -> float | None:
        """Offsets appended per second to `topic` within the window."""
        points = [(t, n) for t, n in self.ends.get(topic, []) if start <= t <= end]
        if len(points) < 2 or points[-1][0] == points[0][0]:
            return None
        return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


# --- read-model notifications ---------------------------------------------------------------


@dataclass
class Notifications:
    """LISTENs on the projector's channel: for every execution id, when (wall and monotonic
    time) the read model committed its terminal status. The projector sends
    `<execution id> <status>` in the transaction that makes the row visible."""

    database_url: str
    channel: str = "jobsprint_executions"
    seen: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        ) as conn:
            await conn.execute(f"LISTEN {self.channel}")
            self.ready.set()
            async for notify in conn.notifies():
                execution_id, _, status = notify.payload.partition(" ")
                self.seen[execution_id] = (time.time(), time.monotonic(), status)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="notifications")
        await asyncio.wait_for(self.ready.wait(), 10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def finished_times(database_url: str, ids: Sequence[str]) -> dict[str, tuple[float, str]]:
    """id -> (finished_at as epoch seconds, status) from the read model."""
    out: dict[str, tuple[float, str]] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for chunk_start in range(0, len(ids), 5000):
            chunk = list(ids[chunk_start : chunk_start + 5000])
            cur = await conn.execute(
                "SELECT id, extract(epoch FROM finished_at)::float8, status FROM executions"
                " WHERE id = ANY(%s)",
                (chunk,),
            )
            for execution_id, finished, status in await cur.fetchall():
                if finished is not None:
                    out[execution_id] = (finished, status)
    return out


async def scrape_counter(url: str, metric: str) -> float | None:
    """Sum of a Prometheus counter's samples at `url` (a tiny GET, no client library)."""
    rest = url.split("://", 1)[-1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    total = 0.0
    found = False
    for line in data.decode("latin-1").splitlines():
        if line.startswith(metric) and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name == metric:
                total += float(line.rsplit(" ", 1)[1])
                found = True
    return total if found else None
