"""The real process (`python -m jobsprint.metrics`): killed with SIGKILL while it loads, it
comes back and counts every execution exactly once; a finished execution shows up within 2 s;
the `sql` command works beside it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobsprint.events import (
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    Topics,
    make,
    utcnow,
)
from jobsprint.events.ids import new_execution_id

from .conftest import produce
from .dataset import expected_metrics, generate

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, bootstrap: str, topics: Topics, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.env = {
            **os.environ,
            "JOBSPRINT_KAFKA_BOOTSTRAP": bootstrap,
            "JOBSPRINT_TOPIC_PREFIX": topics.prefix,
            "JOBSPRINT_PARTITIONS": "3",
            "JOBSPRINT_CHDB_PATH": str(folder / "chdb"),
            "JOBSPRINT_METRICS_HTTP_PORT": str(self.port),
            "JOBSPRINT_METRICS_BATCH_MAX_ROWS": "1000",
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.folder / f"service-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobsprint.metrics"],
            env=self.env,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.folder.glob("service-*.log")))

    async def wait_ready(self, client: httpx.AsyncClient, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.logs()
            try:
                if (await client.get(f"{self.base}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"not ready in {timeout_s} s:\n{self.logs()}")

    async def sql(self, client: httpx.AsyncClient, statement: str) -> list[list[Any]]:
        response = await client.post(f"{self.base}/v1/sql", json={"sql": statement})
        assert response.status_code == 200, response.text
        rows: list[list[Any]] = response.json()["data"]["rows"]
        return rows

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def service(bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[Service]:
    running = Service(bootstrap, topics, tmp_path)
    yield running
    if running.process is not None and running.process.poll() is None:
        running.process.kill()
        running.process.wait(10)


async def test_kill_9_while_loading_neither_loses_nor_double_counts(
    bootstrap: str, topics: Topics, service: Service
) -> None:
    dataset = generate(n=2200, seed=99)
    events = dataset.events()
    assert len(events) >= 20_000
    service.start()
    async with httpx.AsyncClient(timeout=30) as client:
        await service.wait_ready(client)

        # produce at a steady pace so the kill lands in the middle of loading
        async def feed() -> None:
            for start in range(0, len(events), 2000):
                await produce(bootstrap, topics, events[start : start + 2000])
                await asyncio.sleep(0.25)

        feeding = asyncio.create_task(feed())
        loaded_at_kill = 0
        while loaded_at_kill < 500:
            [[loaded_at_kill]] = await service.sql(client, "SELECT count() FROM executions FINAL")
            await asyncio.sleep(0.05)
        service.kill()
        assert not feeding.done(), "the kill should land while events still arrive"
        await feeding

        service.start()
        await service.wait_ready(client)
        want = len([x for x in dataset.executions if not x.deleted])
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline:
            [[count]] = await service.sql(client, "SELECT count() FROM executions FINAL")
            if count == want:
                break
            await asyncio.sleep(0.2)
        assert 0 < loaded_at_kill < want
        assert count == want, service.logs()
        await asyncio.sleep(1.5)  # nothing more shows up later either
        [[count, versions]] = await service.sql(
            client, "SELECT count(), sum(version) FROM executions FINAL"
        )
        assert count == want
        # each row is at the seq of its execution's last execution-level event
        assert versions == sum(
            max(
                e.seq
                for e in x.events
                if not e.type.startswith(("execution.step", "execution.log"))
            )
            for x in dataset.executions
            if not x.deleted
        )
        [[steps]] = await service.sql(client, "SELECT count() FROM steps FINAL")
        assert steps == sum(x.steps for x in dataset.executions if not x.deleted)

        workspace = dataset.workspaces[0]
        response = await client.get(
            f"{service.base}/v1/metrics",
            params={
                "workspaceId": workspace,
                "fromDate": "2025-01-01",
                "toDate": "2025-02-01",
                "granularity": "week",
            },
        )
        start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
        assert response.json()["data"] == expected_metrics(
            dataset, workspace, None, start, end, "week"
        )
        lag = (await client.get(f"{service.base}/metrics")).text
        assert 'jobsprint_consumer_lag{consumer="metrics",partition="0"} 0.0' in lag
    assert service.stop() == 0


async def test_a_finished_execution_is_counted_within_two_seconds(
    bootstrap: str, topics: Topics, service: Service
) -> None:
    service.start()
    workspace = "ws_" + "f" * 26
    async with httpx.AsyncClient(timeout=30) as client:
        await service.wait_ready(client)
        params = {
            "workspaceId": workspace,
            "fromDate": (utcnow() - timedelta(hours=1)).isoformat(),
            "granularity": "hour",
        }
        seen = []
        for round_ in range(3):
            execution_id = new_execution_id()
            started = utcnow()

            def envelope(seq: int, payload: Any, execution_id: str = execution_id) -> Any:
                return make(
                    payload,
                    execution_id=execution_id,
                    workspace_id=workspace,
                    correlation_id=execution_id,
                    seq=seq,
                )

            await produce(
                bootstrap,
                topics,
                [
                    envelope(
                        1,
                        ExecutionRequested(
                            workflow_id="wf_x", workflow_name="x", workflow_version=1
                        ),
                    ),
                    envelope(2, ExecutionStarted()),
                    envelope(3, ExecutionSucceeded(duration_ms=42)),
                ],
            )
            produced = time.monotonic()
            while True:
                response = await client.get(f"{service.base}/v1/metrics", params=params)
                if response.json()["data"]["totalExecutions"] == round_ + 1:
                    break
                assert time.monotonic() - produced < 5, "not visible after 5 s"
                await asyncio.sleep(0.02)
            seen.append(time.monotonic() - produced)
            assert started <= utcnow()
        assert max(seen) < 2.0, seen

        # the sql command while the service owns the folder: it asks the service instead
        command = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobsprint.metrics",
                "sql",
                "SELECT count() AS n FROM executions FINAL",
            ],
            env=service.env,
            cwd=service.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert command.returncode == 0, command.stderr
        assert "owns the chDB folder" in command.stderr and "POST" in command.stderr
        assert command.stdout == "n\n3\n"
    assert service.stop() == 0

    # with the service stopped, the command opens the folder itself, read-only
    command = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsprint.metrics",
            "sql",
            "--format",
            "json",
            "SELECT status, count() AS n FROM executions FINAL GROUP BY status",
        ],
        env=service.env,
        cwd=service.folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 0, command.stderr
    assert command.stdout == '{"status":"success","n":3}\n'
    refused = subprocess.run(
        [sys.executable, "-m", "jobsprint.metrics", "sql", "DROP TABLE executions"],
        env=service.env,
        cwd=service.folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "refused" in refused.stderr
