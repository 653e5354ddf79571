"""What one projector batch costs: `apply_batch` run on realistic batches against a scratch
database on the local Postgres, measuring wall time, the CPU of this Python process and the
CPU of its Postgres backend (`/proc/<pg_backend_pid()>/stat`), per execution.

Batches are the 13-event streams of `bench/eventgen.py` (with its mix of failed, cancelled
and unfinished runs), keyed by execution over three partitions as the executor writes them:
- `whole`: every execution of a batch starts and finishes in it (inserts only);
- `spread`: executions overlap the way concurrent runs do, each spread over about three
  consecutive batches (loaded rows, updates, inserts and finishes in every batch).
Batch sizes are in executions' worth of events (13 events each).

    uv run --all-packages python bench/projector_batch_bench.py
    uv run --all-packages python bench/projector_batch_bench.py --sizes 20,200 --rounds 5

Another version of the projector (say HEAD's, as a baseline) is measured by putting its
package first on the path; the first line printed says which `apply_batch` ran:

    mkdir -p /tmp/pbase && git archive HEAD services/projector/src \
        | tar -x -C /tmp/pbase --strip-components=3
    PYTHONPATH=/tmp/pbase uv run --all-packages python bench/projector_batch_bench.py

The machine is shared: compare versions run alternately, not an hour apart.

The database (`--database`, dropped first and at the end) holds the projector's migrations
in the schema `pbench`, recreated for every run with 50,000 finished executions in it
(see `preload`); a few warm-up batches (prepared statements) are not measured.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import uvloop
from aiokafka import ConsumerRecord
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.eventgen import StreamMaker, WorkflowPicker, make_workflows  # noqa: E402
from jobsprint.projector import batch as projector_batch  # noqa: E402
from jobsprint.projector import store  # noqa: E402
from jobsprint.projector.batch import Record, apply_batch, decode_records  # noqa: E402

TOPIC = "pbench.events"
SCHEMA = "pbench"
PARTITIONS = 3
EVENTS_PER_EXECUTION = 13
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T0_MS = 1_767_225_600_000  # 2026-01-01
PRELOAD = 50_000  # executions in the read model before the first batch


@dataclass(frozen=True)
class Batch:
    records: list[Record]
    finished: int  # executions whose last event is in this batch


@dataclass(frozen=True)
class Run:
    mode: str
    size: int
    executions: int  # finished in the measured batches
    batches: int
    wall_s: float
    python_cpu_s: float
    backend_cpu_s: float
    decode_cpu_s: float

    def per_execution_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.executions


def make_batches(mode: str, size: int, executions: int, seed: int) -> list[Batch]:
    """`executions` streams cut into batches of `size` executions' worth of events."""
    rng = random.Random(seed)
    maker = StreamMaker("ws_bench", seed=seed)
    picker = WorkflowPicker(make_workflows(12, rng, T0_MS), rng)
    timed: list[tuple[float, int, int, str, bytes]] = []  # (when, execution, seq, id, event)
    for n in range(executions):
        eid, events = maker.execution(picker(), T0_MS + 4 * n)
        for seq, event in enumerate(events):
            if mode == "whole":
                when = float(n // size)  # the whole stream in the execution's own batch
            else:  # over about two batches' worth of later starts
                when = n + 2 * size * seq / EVENTS_PER_EXECUTION
            timed.append((when, n, seq, eid, event))
    timed.sort(key=lambda t: (t[0], t[1], t[2]))
    last_seq: dict[int, int] = {}
    for _, n, seq, _, _ in timed:
        last_seq[n] = max(seq, last_seq.get(n, 0))
    offsets = [0] * PARTITIONS
    per_batch = size * EVENTS_PER_EXECUTION
    batches = []
    for start in range(0, len(timed), per_batch):
        chunk = timed[start : start + per_batch]
        by_partition: dict[int, list[Record]] = {}
        finished = 0
        for _, n, seq, eid, event in chunk:
            partition = zlib.crc32(eid.encode()) % PARTITIONS
            key = eid.encode()
            record: Record = ConsumerRecord(
                TOPIC, partition, offsets[partition], 0, 0, key, event, None, len(key),
                len(event), [],
            )  # fmt: skip
            offsets[partition] += 1
            by_partition.setdefault(partition, []).append(record)
            finished += seq == last_seq[n]
        # what getmany() hands over: partition by partition, offset order within each
        records = [r for p in sorted(by_partition) for r in by_partition[p]]
        batches.append(Batch(records, finished))
    return batches


async def preload(conn: store.Connection, executions: int) -> None:
    """Finished executions (two steps each) already in the read model, then ANALYZE: the
    plans Postgres caches for the projector's prepared statements after a few batches
    are then those of a table of some size. (On a few hundred rows never analyzed it picks
    a sequential scan of `executions` and keeps it until the table is next analyzed.)"""
    await conn.execute(
        "INSERT INTO executions (id, workspace_id, workflow_id, workflow_name,"
        " workflow_version, status, triggered_by, input, output, timeout_s, created_at,"
        " started_at, finished_at, duration_ms, last_seq)"
        " SELECT 'exec_0000' || lpad(g::text, 22, '0'), 'ws_bench', 'wf_preload', 'Preload',"
        " 1, 'success', 'api', '{\"n\": 1}', '{\"d\": 2}', 300, now(), now(), now(), 5, 13"
        " FROM generate_series(1, %s) AS g",
        (executions,),
    )
    await conn.execute(
        "INSERT INTO execution_steps (execution_id, step_id, started_seq, position, step_name,"
        " step_type, status, attempts, input, output, started_at, finished_at, duration_ms)"
        " SELECT e.id, s.id, 4 + 5 * s.position, s.position, s.id, 'transform', 'success', 1,"
        " '{}', '{}', now(), now(), 1"
        " FROM executions AS e, (VALUES ('shape', 0), ('double', 1)) AS s(id, position)"
    )
    await conn.execute("ANALYZE")


def backend_cpu_s(pid: int) -> float:
    """utime + stime of a local process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def run_once(url: str, mode: str, size: int, executions: int, warmup: int, seed: int) -> Run:
    batches = make_batches(mode, size, executions, seed)
    await store.prepare_schema(url, SCHEMA, fresh=True)
    conn = await store.connect(url, SCHEMA)
    try:
        await preload(conn, PRELOAD)
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        pid = int(row[0])

        async def no_dead_letters(record: Record, error: str) -> None:
            raise AssertionError(f"dead letter at {record.offset}: {error}")

        for b in batches[:warmup]:  # prepared statements, caches, a few stored rows
            await apply_batch(conn, TOPIC, b.records, dead_letter=no_dead_letters, notify=True)
        measured = batches[warmup:]
        wall0, cpu0, be0 = time.perf_counter(), time.process_time(), backend_cpu_s(pid)
        for b in measured:
            await apply_batch(conn, TOPIC, b.records, dead_letter=no_dead_letters, notify=True)
        wall1, cpu1, be1 = time.perf_counter(), time.process_time(), backend_cpu_s(pid)
        cur = await conn.execute("SELECT count(*) FROM executions")
        row = await cur.fetchone()
        assert row is not None and row[0] == PRELOAD + executions, row
    finally:
        await conn.close()
    decode0 = time.process_time()
    for b in measured:
        decode_records(b.records)
    decode_s = time.process_time() - decode0
    return Run(
        mode,
        size,
        sum(b.finished for b in measured),
        len(measured),
        wall1 - wall0,
        cpu1 - cpu0,
        be1 - be0,
        decode_s,
    )


async def main(args: argparse.Namespace) -> None:
    admin = args.admin_url
    url = admin.rsplit("/", 1)[0] + f"/{args.database}"
    name = sql.Identifier(args.database)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    print(f"apply_batch from {projector_batch.__file__}")
    print(
        f"{'mode':6} {'size':>4} {'batches':>7} {'execs':>6}  per execution, median of"
        f" {args.rounds} rounds (min..max): wall ms | python cpu ms (of it decode) |"
        " postgres backend cpu ms"
    )
    try:
        for mode in args.modes.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                runs = []
                for r in range(args.rounds):
                    warmup = max(3, 400 // size)
                    total = size * (warmup + max(4, args.executions // size))
                    runs.append(await run_once(url, mode, size, total, warmup, seed=7 + r))
                report(runs)
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def report(runs: Sequence[Run]) -> None:
    def col(get: str) -> str:
        values = [r.per_execution_ms(getattr(r, get)) for r in runs]
        return f"{statistics.median(values):6.3f} ({min(values):.3f}..{max(values):.3f})"

    first = runs[0]
    print(
        f"{first.mode:6} {first.size:>4} {first.batches:>7} {first.executions:>6}  "
        f"wall {col('wall_s')} | py {col('python_cpu_s')} (decode {col('decode_cpu_s')})"
        f" | pg {col('backend_cpu_s')}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="jobsprint_pbench")
    parser.add_argument("--modes", default="spread,whole")
    parser.add_argument("--sizes", default="1,5,20,50,200", help="executions per batch")
    parser.add_argument("--executions", type=int, default=3000, help="measured, per run")
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main(parser.parse_args()))
