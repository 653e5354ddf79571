"""Settings shared by every service. Each service subclasses CommonSettings once."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobsprint.events import DEFAULT_PARTITIONS, Topics

ENV_PREFIX = "JOBSPRINT_"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, comma-separated."""
    topic_prefix: str = "jobsprint"
    """Prefix of every topic name (`<prefix>.commands`, `<prefix>.events`, …)."""
    partitions: int = DEFAULT_PARTITIONS
    """Partition count of the commands and events topics (created when missing)."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/jobsprint"
    """Postgres connection string."""
    log_level: str = "INFO"
    """Log level: DEBUG, INFO, WARNING, ERROR."""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment or exit naming every bad or missing setting."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = [f"  {prefix}{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()]
        sys.exit(f"invalid configuration for {cls.__name__}:\n" + "\n".join(lines))
