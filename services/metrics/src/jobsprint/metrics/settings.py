"""The metrics service's settings, read from `JOBSPRINT_*` environment variables."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from jobsprint.runtime.settings import CommonSettings

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_database_name(name: str) -> str:
    """An identifier, so it can go into DDL and queries unquoted."""
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"database name {name!r} must be an identifier (letters, digits, _)")
    return name


class MetricsSettings(CommonSettings):
    metrics_http_host: str = "127.0.0.1"
    """Address the HTTP API (`/v1/metrics`, `/v1/sql`, `/healthz`, `/readyz`, `/metrics`)
    listens on. Use `0.0.0.0` in a container so the gateway can reach it."""
    metrics_http_port: int = 8090
    """Port of the HTTP API; 0 picks a free one."""
    chdb_path: Path = Path(".local/chdb")
    """chDB data folder (relative to the working directory) used when `clickhouse_url` is
    not set. One process at a time may open it: the running service owns it."""
    clickhouse_url: str | None = None
    """ClickHouse server to use instead of chDB, e.g. `http://user:pass@host:8123/jobsprint`
    (or `https://…:8443/…`). A path names the database and overrides
    `clickhouse_database`."""
    clickhouse_database: str = "jobsprint"
    """ClickHouse database holding `executions`, `steps` and `checkpoints`; created at start."""
    metrics_batch_max_rows: int = 5000
    """Most events folded into one ClickHouse insert."""
    metrics_batch_max_seconds: float = 1.0
    """Longest time events wait in memory before they are inserted. When the topic goes
    quiet the pending batch is inserted at once, so a finished execution is queryable
    within about this long."""
    metrics_group: str = ""
    """Kafka consumer group the loader commits its positions under (informational: the
    positions that count are the checkpoints stored in ClickHouse with the rows); empty means
    `<topic_prefix>.metrics`."""
    metrics_sql_token: str | None = None
    """Bearer token that unlocks `POST /v1/sql` (read-only analyst SQL) for remote callers.
    Unset: only loopback clients may use it."""
    metrics_sql_max_rows: int = 10_000
    """Most rows `POST /v1/sql` and `jobsprint-metrics sql` return; longer results are cut."""
    metrics_sql_timeout_s: float = 30.0
    """Longest an analyst query (`POST /v1/sql`, `jobsprint-metrics sql`) may run."""

    @field_validator("clickhouse_database")
    @classmethod
    def _database_is_identifier(cls, value: str) -> str:
        return check_database_name(value)

    @field_validator("clickhouse_url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL naming a host")
        database = parts.path.strip("/")
        if database:
            check_database_name(database)
        return value

    @field_validator("metrics_batch_max_rows")
    @classmethod
    def _rows_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("metrics_batch_max_seconds", "metrics_sql_timeout_s")
    @classmethod
    def _seconds_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> MetricsSettings:
        if not self.metrics_group:
            self.metrics_group = f"{self.topic_prefix}.metrics"
        if self.clickhouse_url:
            database = urlsplit(self.clickhouse_url).path.strip("/")
            if database:
                self.clickhouse_database = database
        return self
