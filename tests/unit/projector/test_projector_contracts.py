"""What the store relies on from the fold, the JSON it sends Postgres, and the settings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from jobsprint.events import (
    Envelope,
    ErrorInfo,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    Payload,
    StepCompleted,
    StepFailed,
    StepStarted,
    make,
)
from jobsprint.projector.fold import Projection
from jobsprint.projector.settings import ProjectorSettings
from jobsprint.projector.store import EXECUTION_UPDATED, STEP_UPDATED, dumps

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def event(payload: Payload, seq: int) -> Envelope[Payload]:
    return make(
        payload,
        execution_id="exec_1",
        workspace_id="ws",
        correlation_id="c",
        seq=seq,
        time=T0 + timedelta(seconds=seq),
    )


FOLLOW_UPS: list[Payload] = [
    ExecutionStarted(),
    StepStarted(step_id="s", step_name="S2", step_type="http", position=5, attempt=2, input=2),
    StepCompleted(step_id="s", attempt=2, output={"o": 1}, duration_ms=3, reused_from="exec_0"),
    StepFailed(step_id="s", attempt=2, error=ErrorInfo(code="x", message="y"), duration_ms=3),
    ExecutionSucceeded(output={"o": 2}, duration_ms=9),
    ExecutionFailed(error=ErrorInfo(code="timeout", message="late"), duration_ms=9),
    ExecutionCancelled(step_id="s", duration_ms=9),
]


@pytest.mark.parametrize("follow_up", FOLLOW_UPS, ids=lambda p: type(p).__name__)
def test_stored_rows_change_only_in_the_columns_the_store_updates(follow_up: Payload) -> None:
    requested = ExecutionRequested(
        workflow_id="wf", workflow_name="W", workflow_version=1, input={"i": 1}
    )
    first = Projection()
    first.apply(event(requested, 1))
    first.apply(event(ExecutionStarted(), 2))
    first.apply(event(StepStarted(step_id="s", step_name="S", step_type="log", position=0), 3))
    stored = first.changes()
    before = {
        "execution": dataclasses.asdict(stored.executions[0]),
        "step": dataclasses.asdict(stored.steps[0]),
    }

    projection = Projection(
        [dataclasses.replace(stored.executions[0])], [dataclasses.replace(stored.steps[0])]
    )
    assert projection.apply(event(follow_up, 4))
    changes = projection.changes()
    assert changes.new_executions == changes.new_steps == []
    for kind, rows, updated in (
        ("execution", changes.changed_executions, EXECUTION_UPDATED),
        ("step", changes.changed_steps, STEP_UPDATED),
    ):
        for row in rows:
            after = dataclasses.asdict(row)
            changed = {k for k in after if after[k] != before[kind][k]}
            assert changed <= set(updated), f"{kind} columns the store would not write"


def test_json_for_postgres_replaces_nul_characters_only() -> None:
    value: dict[str, Any] = {"text": "a\x00b", "escaped": "\\u0000", "both": "\\\x00"}
    assert orjson.loads(dumps(value)) == {
        "text": "a\ufffdb",
        "escaped": "\\u0000",
        "both": "\\\ufffd",
    }


def test_the_consumer_group_follows_the_topic_prefix() -> None:
    assert ProjectorSettings(topic_prefix="acme").projector_group == "acme.projector"
    assert ProjectorSettings(projector_group="mine").projector_group == "mine"


@pytest.mark.parametrize("schema", ["Public", "drop table", "x;y", ""])
def test_a_schema_name_must_be_a_plain_identifier(schema: str) -> None:
    with pytest.raises(ValidationError, match="projector_schema"):
        ProjectorSettings(projector_schema=schema)


def test_settings_come_from_jobsprint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSPRINT_PROJECTOR_SCHEMA", "readmodel")
    monkeypatch.setenv("JOBSPRINT_PROJECTOR_HTTP_PORT", "9000")
    monkeypatch.setenv("JOBSPRINT_PROJECTOR_BATCH_MAX", "500")
    settings = ProjectorSettings()
    assert (settings.projector_schema, settings.projector_http_port) == ("readmodel", 9000)
    assert settings.projector_batch_max == 500
