"""kill -9 in the middle of a stream: the restarted projector ends with exactly the read
model a fresh rebuild (in worker processes) gives — nothing lost, nothing applied twice.
kill -9 of a rebuild worker: the rebuild fails, it never reports a partial schema."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import orjson
import psycopg
import pytest

from jobsprint.events import Topics
from jobsprint.projector.compare import table_checksums

pytestmark = pytest.mark.integration

EXECUTIONS = 2400  # about 20k events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def projector_env(bootstrap: str, topics: Topics, database: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "JOBSPRINT_KAFKA_BOOTSTRAP": bootstrap,
        "JOBSPRINT_DATABASE_URL": database,
        "JOBSPRINT_TOPIC_PREFIX": topics.prefix,
        "JOBSPRINT_PARTITIONS": "3",
        "JOBSPRINT_PROJECTOR_HTTP_PORT": str(port),
        # static membership: the restarted process takes its partitions back at once
        "JOBSPRINT_PROJECTOR_INSTANCE_ID": "projector-0",
    }


def start_projector(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobsprint.projector", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    async with asyncio.timeout(30):
        while True:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode() if process.stderr else "")
            try:
                status, _ = await asyncio.to_thread(http_get, port, "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)


async def test_kill_9_mid_stream_then_restart_equals_a_rebuild(
    bootstrap: str,
    topics: Topics,
    database: str,
    publisher: Any,
    make_workload: Any,
    caught_up: Any,
    stored_checkpoints: Any,
) -> None:
    events = make_workload(EXECUTIONS)
    total = len(events)
    await publisher.send(events)
    port = free_port()
    env = projector_env(bootstrap, topics, database, port)

    first = start_projector(env)
    try:
        await wait_ready(first, port)
        async with asyncio.timeout(30):
            while sum((await stored_checkpoints(database, topics.events)).values()) < total // 4:
                await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    applied_when_killed = sum((await stored_checkpoints(database, topics.events)).values())
    assert total // 4 <= applied_when_killed < total, "the kill must land mid-stream"

    second = start_projector(env)
    try:
        await wait_ready(second, port)
        await caught_up(database, topics.events, publisher.last_offsets, timeout_s=40)
        status, metrics = await asyncio.to_thread(http_get, port, "/metrics")
        assert status == 200
        assert b"jobsprint_projector_events_total" in metrics
        assert b"jobsprint_projector_batch_size_bucket" in metrics
        assert b'jobsprint_consumer_lag{consumer="projector",partition="0"}' in metrics
        assert b'jobsprint_dead_letters_total{consumer="projector"} 0.0' in metrics
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0  # SIGTERM: finish the batch, commit, exit 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    # two workers over three partitions: one replays two of them, the other one
    assert len(publisher.last_offsets) == 3
    rebuilt = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsprint.projector",
            "rebuild",
            "--schema",
            "rebuild_check",
            "--workers",
            "2",
        ],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()
    summary = orjson.loads(rebuilt.stdout)
    assert summary["schema"] == "rebuild_check"
    assert summary["workers"] == 2
    assert summary["events"] == total
    assert summary["events_per_s"] > 0
    print(f"rebuild of {total} events: {summary}")

    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        live = await table_checksums(conn, "public")
        assert live == await table_checksums(conn, "rebuild_check")
        cur = await conn.execute("SELECT count(*) FROM (SELECT DISTINCT status FROM executions) s")
        assert (await cur.fetchone()) == (3,)  # success, error, cancelled
    assert live["executions"].rows == EXECUTIONS * 9 // 10  # a tenth were deleted

    compared = subprocess.run(
        [sys.executable, "-m", "jobsprint.projector", "compare", "public", "rebuild_check"],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert compared.returncode == 0, compared.stdout.decode()
    assert compared.stdout.decode().splitlines()[-1] == "identical"


def spawned_workers(parent: int) -> set[int]:
    """The multiprocessing workers `parent` has started (not its resource tracker)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                spawned = b"spawn_main" in cmdline.read()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent and spawned:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


async def test_kill_9_of_a_rebuild_worker_fails_the_rebuild(
    bootstrap: str, topics: Topics, database: str, publisher: Any, make_workload: Any
) -> None:
    await publisher.send(make_workload(EXECUTIONS))
    assert len(publisher.last_offsets) == 3
    env = projector_env(bootstrap, topics, database, free_port())
    rebuild = start_projector(env, "rebuild", "--schema", "rebuild_killed", "--workers", "2")
    try:
        async with asyncio.timeout(30):
            while not (workers := spawned_workers(rebuild.pid)):
                assert rebuild.poll() is None, "the rebuild ended before a worker started"
                await asyncio.sleep(0.002)
        os.kill(min(workers), signal.SIGKILL)
        async with asyncio.timeout(30):
            while rebuild.poll() is None:
                workers |= spawned_workers(rebuild.pid)
                await asyncio.sleep(0.01)
        stdout, stderr = rebuild.communicate()
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
            rebuild.wait()

    assert rebuild.returncode == 1
    assert stdout == b"", "no summary for a partial schema"
    assert not [pid for pid in workers if alive(pid)], "the other worker is stopped too"
    failure = stderr.decode()
    assert "rebuild failed" in failure and "killed by signal 9" in failure
    assert "replay of partitions [0, 2]" in failure or "replay of partitions [1]" in failure
