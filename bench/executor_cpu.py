"""The executor's own Python per execution, without Kafka: executions of the throughput
phase's two-step transform workflow handled by a PartitionWorker whose producer only counts
the records it is given (four commands a transaction), CPU time of this process.

    uv run --all-packages python bench/executor_cpu.py [--executions 3000]

For where the time goes: `py-spy record -o out.svg -- python bench/executor_cpu.py` (nothing
else runs in this process, so its samples are its CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from jobsprint.events import ExecuteWorkflow, Topics, encode, make, utcnow
from jobsprint.events.ids import new_execution_id
from jobsprint.executor.partition import PartitionWorker
from jobsprint.executor.steps import StepEnvironment

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.phases import WORKFLOW  # noqa: E402  (the throughput phase's two-step workflow)


class CountingProducer:
    """What PartitionWorker uses of a transactional producer, counting records."""

    def __init__(self) -> None:
        self.records = 0

    def transaction(self) -> Any:
        class Transaction:
            async def __aenter__(self) -> Transaction:
                return self

            async def __aexit__(self, *exc: object) -> bool:
                return False

        return Transaction()

    async def send(self, topic: str, value: bytes | None, **_: Any) -> None:
        self.records += 1

    async def stop(self) -> None:
        pass


def commands(count: int) -> list[Any]:
    records = []
    for offset in range(count):
        execution_id = new_execution_id()
        envelope = make(
            ExecuteWorkflow(
                workflow_id="wf",
                workflow_name="demo",
                workflow_version=1,
                workflow=WORKFLOW,
                input={"n": offset, "email": "user@example.com"},
                timeout_s=60,
                requested_at=utcnow(),
            ),
            execution_id=execution_id,
            workspace_id="ws",
            correlation_id=execution_id,
        )
        records.append(
            SimpleNamespace(
                value=encode(envelope), key=envelope.key, offset=offset, topic="c", partition=0
            )
        )
    return records


async def run(count: int) -> tuple[float, float]:
    producer = CountingProducer()
    async with httpx.AsyncClient() as http:
        worker = PartitionWorker(
            0,
            Topics("bench"),
            producer,  # type: ignore[arg-type]
            StepEnvironment(http, [], 1),
            0.001,
        )
        worker.start([])
        records = commands(count)
        started = time.process_time()
        for first in range(0, count, 4):
            for record in records[first : first + 4]:
                worker.handle(record)
            while worker.tasks:
                await asyncio.sleep(0)
            await worker.flush()
        spent = time.process_time() - started
        await worker.stop()
    return spent / count * 1000, producer.records / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=3000)
    args = parser.parse_args()
    ms, records = asyncio.run(run(args.executions))
    print(f"{ms:.3f} ms of CPU per execution, {records:.1f} records each")


if __name__ == "__main__":
    main()
