"""The projector's settings, read from `JOBSPRINT_*` environment variables."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from jobsprint.runtime.settings import CommonSettings

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(name: str) -> str:
    """A lower-case SQL identifier, so it can go into `search_path` and DDL unquoted."""
    if not _SCHEMA_NAME.match(name):
        raise ValueError(
            f"schema name {name!r} must be a lower-case identifier (letters, digits, _)"
        )
    return name


class ProjectorSettings(CommonSettings):
    projector_schema: str = "public"
    """Postgres schema holding the read model (executions, execution_steps, execution_logs,
    projector_checkpoints); created and migrated at start."""
    projector_http_host: str = "127.0.0.1"
    """Address of the ops endpoint (`/healthz`, `/readyz`, `/metrics`)."""
    projector_http_port: int = 8091
    """Port of the ops endpoint; 0 picks a free one."""
    projector_batch_max: int = 2000
    """Most events folded and written in one Postgres transaction."""
    projector_batch_wait_ms: int = Field(0, ge=0, le=1000)
    """When a poll brings fewer than `projector_batch_max` events, wait this long for more
    before folding them: fewer, larger transactions, at most this much added to the time
    until an event is visible. 0 (the default): the events that arrive while a batch is
    written make the next one."""
    projector_group: str = ""
    """Kafka consumer group; empty means `<topic_prefix>.projector`."""
    projector_instance_id: str = ""
    """Static group membership id, unique per replica (e.g. the pod name). When set, a
    restarted replica takes its partitions back at once instead of waiting out the session
    timeout; a replica that goes away for good holds them until that timeout."""

    @field_validator("projector_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        return check_schema_name(value)

    @field_validator("projector_batch_max")
    @classmethod
    def _batch_is_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @model_validator(mode="after")
    def _default_group(self) -> ProjectorSettings:
        if not self.projector_group:
            self.projector_group = f"{self.topic_prefix}.projector"
        return self
