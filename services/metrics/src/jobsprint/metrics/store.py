"""The loader's side of ClickHouse: stored state of executions the cache lacks, row writes, and
the per-partition checkpoints the consumer resumes from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from jobsprint.metrics.clickhouse import AsyncClickHouse
from jobsprint.metrics.loader import ExecutionState, execution_from_row, step_from_row
from jobsprint.metrics.schema import (
    CHECKPOINT_COLUMNS,
    EXECUTION_COLUMNS,
    FINISHED_COLUMNS,
    FINISHED_TABLE,
    STEP_COLUMNS,
)

Row = Sequence[Any]


class LoaderStore:
    def __init__(self, ch: AsyncClickHouse, database: str) -> None:
        self.ch = ch
        self.database = database

    async def load(self, executions: Mapping[str, str]) -> dict[str, ExecutionState]:
        """Stored state (newest version, deleted ones included) of `executions`
        (execution id -> workspace id); absent ids are not stored."""
        if not executions:
            return {}
        keys = [(workspace, execution) for execution, workspace in executions.items()]
        db = self.database
        rows = await self.ch.query(
            f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM {db}.executions"
            " WHERE (workspace_id, execution_id) IN {keys:Array(Tuple(String, String))}"
            " ORDER BY version DESC LIMIT 1 BY execution_id",
            {"keys": keys},
        )
        states = (execution_from_row(dict(zip(EXECUTION_COLUMNS, r, strict=True))) for r in rows)
        found = {state.execution_id: state for state in states}
        if found:
            step_rows = await self.ch.query(
                f"SELECT {', '.join(STEP_COLUMNS)} FROM {db}.steps"
                " WHERE (workspace_id, execution_id) IN {keys:Array(Tuple(String, String))}"
                " ORDER BY version DESC LIMIT 1 BY execution_id, step_id",
                {"keys": [(s.workspace_id, s.execution_id) for s in found.values()]},
            )
            for raw in step_rows:
                row = dict(zip(STEP_COLUMNS, raw, strict=True))
                state = found.get(row["execution_id"])
                if state is not None:
                    state.steps[row["step_id"]] = step_from_row(row)
        return found

    async def write(
        self, executions: Sequence[Row], steps: Sequence[Row], finished: Sequence[Row]
    ) -> None:
        """Rows of one batch, `executions` last (consumer.py says why)."""
        db = self.database
        await self.ch.insert(f"{db}.steps", steps, STEP_COLUMNS)
        await self.ch.insert(f"{db}.{FINISHED_TABLE}", finished, FINISHED_COLUMNS)
        await self.ch.insert(f"{db}.executions", executions, EXECUTION_COLUMNS)

    async def checkpoints(self, topic: str) -> dict[int, int]:
        """Partition -> next offset to load."""
        rows = await self.ch.query(
            f"SELECT partition, max(next_offset) FROM {self.database}.checkpoints"
            " WHERE topic = {topic:String} GROUP BY partition",
            {"topic": topic},
        )
        return {int(partition): int(offset) for partition, offset in rows}

    async def save_checkpoints(self, topic: str, positions: Mapping[int, int]) -> None:
        if not positions:
            return
        now = datetime.now(UTC)
        rows = [(topic, partition, offset, now) for partition, offset in positions.items()]
        await self.ch.insert(f"{self.database}.checkpoints", rows, CHECKPOINT_COLUMNS)
